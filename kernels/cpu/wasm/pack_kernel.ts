/**
 * WebAssembly strip copies. The fixed-width ones pack matmul operands into the panels
 * `gemm_kernel.ts` reads: each copies `count` strips, strip p from src + p·srcStrideBytes to
 * dst + p·width·4. `copyVectorStrips` copies strips of any whole number of vectors, for the
 * transposes of `transpose.ts`.
 *
 * A panel of NR = 8 columns of a row-major B is 8 floats from each of its k rows, and a panel of
 * MR = 6 rows of a transposed A is 6 floats from each of its k columns, so both are strip copies.
 * Each strip here is two vector moves. Packing the tiny-GPT step's operands took 6.0–6.8 ms per
 * step with TypeScript loops and 2.9–3.3 ms with these copies (timers around the packing, one
 * thread, 2-core AMD EPYC VM). Most of what remains packs a transposed B, still in TypeScript.
 */

import { FunctionBuilder, I32 } from "./encoder.ts";

/** The arguments of each exported strip copy, in order. */
export const STRIP_ARGS = ["src", "dst", "count", "srcStrideBytes"] as const;

/**
 * Builds a copy of strips `width` floats wide. A strip of 8 moves as two v128, and one of 6 as a
 * v128 and an i64. It requires count ≥ 1, because the loop tests its condition at the bottom.
 */
export function buildStripCopy(width: 6 | 8): FunctionBuilder {
  const f = new FunctionBuilder(STRIP_ARGS.map(() => I32));
  const [src, dst, count, srcStride] = STRIP_ARGS.map((_, index) => index);

  f.loop();
  f.get(dst).get(src).v128Load(0).v128Store(0);
  if (width === 8) f.get(dst).get(src).v128Load(16).v128Store(16);
  else f.get(dst).get(src).i64Load(16).i64Store(16);
  f.get(src).get(srcStride).i32Add().set(src);
  f.get(dst).i32Const(width * 4).i32Add().set(dst);
  f.get(count).i32Const(1).i32Sub().tee(count).brIf(0);
  f.end();
  return f;
}

/** The arguments of the exported `copyVectorStrips`, in order. */
export const VECTOR_STRIP_ARGS = ["src", "dst", "count", "srcStrideBytes", "vectors"] as const;

/**
 * Builds a copy of `count` strips of `vectors` v128 each, strip p from src + p·srcStrideBytes to
 * dst + p·vectors·16, so the strips land back to back. It requires count and vectors ≥ 1.
 */
export function buildVectorStripCopy(): FunctionBuilder {
  const f = new FunctionBuilder(VECTOR_STRIP_ARGS.map(() => I32));
  const [src, dst, count, srcStride, vectors] = VECTOR_STRIP_ARGS.map((_, index) => index);
  const from = f.local(I32);
  const end = f.local(I32);

  f.loop(); // over strips
  f.get(src).set(from);
  f.get(src).get(vectors).i32Const(16).i32Mul().i32Add().set(end);
  f.loop(); // over the vectors of one strip
  f.get(dst).get(from).v128Load(0).v128Store(0);
  f.get(dst).i32Const(16).i32Add().set(dst);
  f.get(from).i32Const(16).i32Add().tee(from).get(end).i32LtU().brIf(0);
  f.end();
  f.get(src).get(srcStride).i32Add().set(src);
  f.get(count).i32Const(1).i32Sub().tee(count).brIf(0);
  f.end();
  return f;
}
