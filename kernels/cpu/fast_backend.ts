/**
 * The fast CPU backend: the float32 reference backend with its hot ops replaced by a WebAssembly
 * SIMD matmul and tighter float32 loops (GELU, scale, broadcast binary ops, transpose). It is the
 * engine for training without a GPU; the float64 reference backend stays the oracle that tests
 * compare it against. Ops and cases without a fast path run the reference code, so errors and
 * edge cases behave the same.
 *
 * ```ts
 * const backend = createFastCpuBackend();
 * ```
 */

import type { Backend, BinaryOp, MatmulSpec, Storage, UnaryOp } from "../backend.ts";
import { CpuBackend } from "./backend.ts";
import { checkShape } from "./broadcast.ts";
import { binaryRepeating, gelu, geluBackward, scale, swapAxes } from "./fast_ops.ts";
import { checkCount, CpuMemory, product } from "./storage.ts";
import { WasmGemm } from "./wasm/gemm.ts";

export interface FastCpuBackendOptions {
  /** Fill new storages with NaN (ints with −2³¹), so an op that skips an element is caught. */
  poison?: boolean;
}

/** Creates the fast float32 CPU backend; compiling its kernels takes a few milliseconds. */
export function createFastCpuBackend(options: FastCpuBackendOptions = {}): Backend {
  return new FastCpuBackend(new CpuMemory("f32", options.poison ?? false), WasmGemm.create());
}

class FastCpuBackend extends CpuBackend {
  override readonly description: string;

  constructor(mem: CpuMemory, private readonly gemm: WasmGemm) {
    super(mem);
    const simd = gemm.fma ? "WebAssembly SIMD with relaxed FMA" : "WebAssembly SIMD";
    this.description = `cpu (${simd}, float32)`;
  }

  override matmul(a: Storage, b: Storage, spec: MatmulSpec): Storage {
    const op = "matmul";
    const { batch, m, n, k, aBatched, bBatched } = spec;
    checkCount(op, "batch", batch);
    checkCount(op, "m", m);
    checkCount(op, "n", n);
    checkCount(op, "k", k);
    const ad = this.mem.floats(op, "a", a, (aBatched ? batch : 1) * m * k) as Float32Array;
    const bd = this.mem.floats(op, "b", b, (bBatched ? batch : 1) * k * n) as Float32Array;

    const out = this.mem.allocFloat(batch * m * n);
    this.gemm.matmul(ad, bd, out.data as Float32Array, spec);
    return out;
  }

  override unary(op: UnaryOp, x: Storage, param?: number): Storage {
    if (op !== "gelu" && !(op === "scale" && typeof param === "number")) {
      return super.unary(op, x, param);
    }
    const xd = this.mem.floats("unary", "x", x, x.size) as Float32Array;
    const out = this.mem.allocFloat(xd.length);
    if (op === "gelu") gelu(xd, out.data as Float32Array);
    else scale(xd, param as number, out.data as Float32Array);
    return out;
  }

  override unaryBackward(op: UnaryOp, x: Storage, dy: Storage, param?: number): Storage {
    if (op !== "gelu") return super.unaryBackward(op, x, dy, param);
    const xd = this.mem.floats("unaryBackward", "x", x, x.size) as Float32Array;
    const dyd = this.mem.floats("unaryBackward", "dy", dy, xd.length) as Float32Array;
    const out = this.mem.allocFloat(xd.length);
    geluBackward(xd, dyd, out.data as Float32Array);
    return out;
  }

  override binary(
    op: BinaryOp,
    a: Storage,
    aShape: readonly number[],
    b: Storage,
    bShape: readonly number[],
    outShape: readonly number[],
  ): Storage {
    const commutes = op === "add" || op === "mul";
    const fast = sameShape(aShape, outShape) && repeatsAlongLeadingAxes(bShape, outShape);
    const swapped = !fast && commutes && sameShape(bShape, outShape) &&
      repeatsAlongLeadingAxes(aShape, outShape);
    if (!fast && !swapped) return super.binary(op, a, aShape, b, bShape, outShape);

    checkShape("binary", "outShape", outShape);
    const ad = this.mem.floats("binary", "a", a, product(aShape)) as Float32Array;
    const bd = this.mem.floats("binary", "b", b, product(bShape)) as Float32Array;
    const out = this.mem.allocFloat(product(outShape));
    if (out.size > 0) {
      if (fast) binaryRepeating(op, ad, bd, out.data as Float32Array);
      else binaryRepeating(op, bd, ad, out.data as Float32Array);
    }
    return out;
  }

  override transpose(x: Storage, shape: readonly number[], axis1: number, axis2: number): Storage {
    const isAxis = (axis: number) => Number.isInteger(axis) && axis >= 0 && axis < shape.length;
    if (!isAxis(axis1) || !isAxis(axis2)) return super.transpose(x, shape, axis1, axis2);
    checkShape("transpose", "shape", shape);
    const xd = this.mem.anyDtype("transpose", "x", x, product(shape));

    const out = x.dtype === "i32" ? this.mem.allocInt(xd.length) : this.mem.allocFloat(xd.length);
    if (axis1 === axis2) out.data.set(xd);
    else swapAxes(xd, out.data, shape, axis1, axis2);
    return out;
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, axis) => d === b[axis]);
}

/**
 * True when `shape` (of the rank of `outShape`) is 1 along some leading axes and equal to
 * `outShape` along the rest, so its elements repeat every product(shape) elements of the output.
 */
function repeatsAlongLeadingAxes(shape: readonly number[], outShape: readonly number[]): boolean {
  if (shape.length !== outShape.length) return false;
  let axis = 0;
  while (axis < shape.length && shape[axis] === 1) axis++;
  for (; axis < shape.length; axis++) if (shape[axis] !== outShape[axis]) return false;
  return product(shape) > 0;
}
