/**
 * The WebAssembly SIMD kernel of the fast CPU matmul: C = A · B in float32 on operands in linear
 * memory, A with arbitrary strides and B packed in panels.
 *
 * Byte addresses and strides are arguments:
 * - A(i, p) is at a + tile·aTileBytes + r·aRowBytes + p·aStepBytes for i = tile·mr + r. A
 *   row-major A read in place has (mr·k·4, k·4, 4); A packed in panels of mr rows has (mr·k·4, 4,
 *   mr·4).
 * - B is packed in panels of nr columns: B(p, j) for j = tile·nr + c is at
 *   b + tile·k·nr·4 + (p·nr + c)·4. A panel is contiguous, so it stays in the L1 cache while a
 *   row of tiles of C reads it; read in place with a row stride of 2 KiB, the same strip of B maps
 *   to two L1 sets and the 512×512×512 product ran at 18 GFLOP/s instead of 48.
 * - C(i, j) is at c + i·ldcBytes + j·4.
 *
 * C is computed in whole tiles of mr×nr, so the caller rounds m and n up to tiles, keeps the rows
 * of A past the edge inside memory and zero-pads B's panels. Rows past the edge only reach C
 * entries past the edge, which the caller discards. Each tile of C lives in `mr · nr / 4` v128
 * locals for the whole k loop. Per step of k the kernel loads `nr / 4` vectors of B, broadcasts
 * `mr` scalars of A and issues `mr · nr / 4` multiply-adds. Every C(i, j) sums its k products in
 * index order.
 */

import { encodeModule, FunctionBuilder, I32, type MemoryImport, V128 } from "./encoder.ts";
import { buildStripCopy } from "./pack_kernel.ts";

export interface GemmShape {
  /** Rows of C per tile. */
  mr: number;
  /** Columns of C per tile; a multiple of 4. */
  nr: number;
  /** Use `f32x4.relaxed_madd` (one fused multiply-add on x86 with FMA) instead of mul + add. */
  fma: boolean;
}

/** The arguments of the exported `gemm`, in order. */
export const GEMM_ARGS = [
  "a",
  "b",
  "c",
  "mTiles",
  "nTiles",
  "k",
  "aTileBytes",
  "aRowBytes",
  "aStepBytes",
  "ldcBytes",
] as const;

/**
 * Builds `gemm(...GEMM_ARGS)`. It requires mTiles, nTiles and k ≥ 1, because the loops test their
 * condition at the bottom.
 */
function buildGemm({ mr, nr, fma }: GemmShape): FunctionBuilder {
  if (nr % 4 !== 0) throw new Error(`gemm kernel: nr is ${nr} but must be a multiple of 4`);
  const vectors = nr / 4;
  const f = new FunctionBuilder(GEMM_ARGS.map(() => I32));
  const [a, b, c, mTiles, nTiles, k, aTileBytes, aRowBytes, aStepBytes, ldc] = GEMM_ARGS.map((
    _,
    index,
  ) => index);
  const i = f.local(I32);
  const j = f.local(I32);
  const p = f.local(I32);
  const ap = f.local(I32);
  const bp = f.local(I32);
  const aTile = f.local(I32);
  const bTile = f.local(I32);
  const cRow = f.local(I32);
  const cTile = f.local(I32);
  const cp = f.local(I32);
  // Byte offset of row r of a tile of A from the tile's first row.
  const rowOffset = Array.from({ length: mr }, () => f.local(I32));
  const acc: number[][] = [];
  for (let r = 0; r < mr; r++) acc.push(Array.from({ length: vectors }, () => f.local(V128)));
  const bv = Array.from({ length: vectors }, () => f.local(V128));
  const av = f.local(V128);

  for (let r = 0; r < mr; r++) f.get(aRowBytes).i32Const(r).i32Mul().set(rowOffset[r]);
  f.i32Const(0).set(i);
  f.get(a).set(aTile);
  f.get(c).set(cRow);

  f.loop(); // over tile rows
  f.i32Const(0).set(j);
  f.get(b).set(bTile);
  f.get(cRow).set(cTile);

  f.loop(); // over tile columns
  for (const row of acc) for (const local of row) f.f32x4Const(0).set(local);
  f.get(aTile).set(ap);
  f.get(bTile).set(bp);
  f.get(k).set(p);

  f.loop(); // over k
  for (let q = 0; q < vectors; q++) f.get(bp).v128Load(16 * q).set(bv[q]);
  for (let r = 0; r < mr; r++) {
    f.get(ap);
    if (r > 0) f.get(rowOffset[r]).i32Add();
    f.v128Load32Splat(0).set(av);
    for (let q = 0; q < vectors; q++) {
      if (fma) {
        f.get(av).get(bv[q]).get(acc[r][q]).f32x4RelaxedMadd().set(acc[r][q]);
      } else {
        f.get(acc[r][q]).get(av).get(bv[q]).f32x4Mul().f32x4Add().set(acc[r][q]);
      }
    }
  }
  f.get(ap).get(aStepBytes).i32Add().set(ap);
  f.get(bp).i32Const(nr * 4).i32Add().set(bp);
  f.get(p).i32Const(1).i32Sub().tee(p).brIf(0);
  f.end();

  f.get(cTile).set(cp);
  for (let r = 0; r < mr; r++) {
    for (let q = 0; q < vectors; q++) f.get(cp).get(acc[r][q]).v128Store(16 * q);
    if (r < mr - 1) f.get(cp).get(ldc).i32Add().set(cp);
  }
  f.get(cTile).i32Const(nr * 4).i32Add().set(cTile);
  f.get(bp).set(bTile); // the loop over k left bp at the start of the next panel
  f.get(j).i32Const(1).i32Add().tee(j).get(nTiles).i32LtU().brIf(0);
  f.end();

  f.get(aTile).get(aTileBytes).i32Add().set(aTile);
  f.get(cRow).get(ldc).i32Const(mr).i32Mul().i32Add().set(cRow);
  f.get(i).i32Const(1).i32Add().tee(i).get(mTiles).i32LtU().brIf(0);
  f.end();
  return f;
}

/**
 * Encodes a module exporting `gemm` for the given tile shape and `gemmRows1` … `gemmRows{mr − 1}`.
 * Those are the same kernel for tiles of fewer rows, used for the last tile row of a C whose row
 * count is not a multiple of mr, so no kernel reads A or writes C past the last row. The module
 * also exports the strip copies of `pack_kernel.ts` as `copyStrips6` and `copyStrips8`.
 */
export function encodeGemmModule(shape: GemmShape, memory: MemoryImport): Uint8Array<ArrayBuffer> {
  const functions = [{ name: "gemm", body: buildGemm(shape) }];
  for (let rows = 1; rows < shape.mr; rows++) {
    functions.push({ name: `gemmRows${rows}`, body: buildGemm({ ...shape, mr: rows }) });
  }
  functions.push({ name: "copyStrips6", body: buildStripCopy(6) });
  functions.push({ name: "copyStrips8", body: buildStripCopy(8) });
  return encodeModule(memory, functions);
}

type GemmFunction = (...args: number[]) => void;

/** The kernels of one instance: `byRows[r]` computes tiles of r rows, and `byRows[mr]` whole tiles. */
export interface GemmKernels {
  byRows: GemmFunction[];
  /** Strip copies 6 and 8 floats wide, with the arguments `STRIP_ARGS` lists. */
  copyStrips6: GemmFunction;
  copyStrips8: GemmFunction;
}

/** Reads the kernels out of an instance of `encodeGemmModule`'s module. */
export function gemmKernels(instance: WebAssembly.Instance, mr: number): GemmKernels {
  const exports = instance.exports as Record<string, GemmFunction>;
  const byRows: GemmFunction[] = [];
  for (let rows = 1; rows < mr; rows++) byRows[rows] = exports[`gemmRows${rows}`];
  byRows[mr] = exports.gemm;
  return { byRows, copyStrips6: exports.copyStrips6, copyStrips8: exports.copyStrips8 };
}

/** True when this engine accepts relaxed-SIMD instructions (V8 has since version 11.4). */
export function supportsRelaxedSimd(): boolean {
  const probe = new FunctionBuilder([]);
  probe.f32x4Const(1).f32x4Const(2).f32x4Const(3).f32x4RelaxedMadd().f32x4ExtractLane(0);
  probe.code.push(0x1a); // drop
  const bytes = encodeModule({ initialPages: 1, maximumPages: 1, shared: false }, [
    { name: "probe", body: probe },
  ]);
  return WebAssembly.validate(bytes);
}
