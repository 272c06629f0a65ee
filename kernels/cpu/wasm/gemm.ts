/**
 * The fast CPU matmul: copies float32 operands into WebAssembly linear memory and runs the SIMD
 * kernel of `gemm_kernel.ts` on them.
 *
 * A row-major A is read in place after one bulk copy. A transposed A and B in either layout are
 * packed into panels on the way in, an O(size) copy against the product's O(m·n·k) work. Results sum each C(i, j) over k in index order in
 * float32, so they differ from the float64-accumulating reference by float32 rounding only.
 */

import type { MatmulSpec } from "../../backend.ts";
import { encodeGemmModule, supportsRelaxedSimd } from "./gemm_kernel.ts";

/**
 * Tile of C held in registers: 6×8 floats are 12 v128 accumulators, which with 2 vectors of B and
 * one broadcast of A fit the 16 SIMD registers of x86-64. Among the tiles 2×16, 3×16, 4×8, 4×12,
 * 5×12, 6×8 and 8×8, the kernel alone ran fastest with 6×8 on 512×512×512 (40 GFLOP/s against 37
 * for 2×16 in the same run, one thread of a 2-core AMD EPYC VM).
 */
const MR = 6;
const NR = 8;
const PAGE_BYTES = 65536;
/** 4 GiB of addresses: the most a 32-bit memory can hold. Pages are committed only on growth. */
const MAX_PAGES = 65536;

type GemmFunction = (...args: number[]) => void;

/** One WebAssembly instance of the kernel with its own linear memory, grown on demand. */
export class WasmGemm {
  private readonly memory: WebAssembly.Memory;
  private readonly gemm: GemmFunction;
  private heap: Float32Array;
  /** Whether the kernel uses fused multiply-adds (relaxed SIMD) or separate mul and add. */
  readonly fma: boolean;

  private constructor(memory: WebAssembly.Memory, gemm: GemmFunction, fma: boolean) {
    this.memory = memory;
    this.gemm = gemm;
    this.heap = new Float32Array(memory.buffer);
    this.fma = fma;
  }

  /** Compiles the kernel synchronously; the module is a few kilobytes, so this takes milliseconds. */
  static create(): WasmGemm {
    const fma = supportsRelaxedSimd();
    const memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES });
    const bytes = encodeGemmModule({ mr: MR, nr: NR, fma }, {
      initialPages: 1,
      maximumPages: MAX_PAGES,
      shared: false,
    });
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
    return new WasmGemm(memory, instance.exports.gemm as GemmFunction, fma);
  }

  /**
   * Computes the batched product of `spec` from a and b into out. Sizes must already be checked:
   * a holds (aBatched ? batch : 1)·m·k floats, b likewise with k·n, and out batch·m·n.
   */
  matmul(a: Float32Array, b: Float32Array, out: Float32Array, spec: MatmulSpec): void {
    const { batch, m, n, k, transA, transB, aBatched, bBatched } = spec;
    if (batch * m * n === 0) return;
    if (k === 0) {
      out.fill(0);
      return;
    }

    const mTiles = Math.ceil(m / MR);
    const nTiles = Math.ceil(n / NR);
    const mPad = mTiles * MR;
    const aEntries = aBatched ? batch : 1;
    const bEntries = bBatched ? batch : 1;
    // A row-major A is read in place, so an entry is m·k floats plus, after the last one, the
    // (mPad − m) rows past the edge that edge tiles read. A transposed A is packed to mPad·k.
    const aEntry = transA ? mPad * k : m * k;
    const bEntry = nTiles * NR * k;
    // C's row stride: n lets the result leave in one copy; a whole number of tiles keeps edge
    // tiles off the next row.
    const ldc = n % NR === 0 ? n : nTiles * NR;
    const cEntry = mPad * ldc;

    const aStart = 0;
    const bStart = align(aStart + aEntries * aEntry + (mPad - m) * k);
    const cStart = align(bStart + bEntries * bEntry);
    this.reserve(cStart + batch * cEntry);
    const heap = this.heap;

    if (transA) {
      for (let e = 0; e < aEntries; e++) {
        packTransposedA(a, e * m * k, heap, aStart + e * aEntry, m, k);
      }
    } else {
      heap.set(a, aStart);
    }
    for (let e = 0; e < bEntries; e++) packB(b, e * k * n, transB, heap, bStart + e * bEntry, n, k);

    const aTileBytes = MR * k * 4;
    const aRowBytes = transA ? 4 : k * 4;
    const aStepBytes = transA ? MR * 4 : 4;
    for (let e = 0; e < batch; e++) {
      this.gemm(
        (aStart + (aBatched ? e * aEntry : 0)) * 4,
        (bStart + (bBatched ? e * bEntry : 0)) * 4,
        (cStart + e * cEntry) * 4,
        mTiles,
        nTiles,
        k,
        aTileBytes,
        aRowBytes,
        aStepBytes,
        ldc * 4,
      );
    }

    copyOut(heap, cStart, cEntry, ldc, out, batch, m, n);
  }

  /** Grows the memory to hold `floats` floats and refreshes the view. */
  private reserve(floats: number): void {
    const bytes = floats * 4;
    const current = this.memory.buffer.byteLength;
    if (bytes > current) {
      const pages = Math.ceil((bytes - current) / PAGE_BYTES);
      if (this.memory.buffer.byteLength / PAGE_BYTES + pages > MAX_PAGES) {
        throw new Error(
          `matmul: the operands need ${bytes} bytes, over the 4 GiB of a WebAssembly memory; ` +
            "split the batch or use the reference cpu backend",
        );
      }
      this.memory.grow(pages);
    }
    if (this.heap.buffer !== this.memory.buffer) this.heap = new Float32Array(this.memory.buffer);
  }
}

/** Rounds a float offset up to a multiple of 16 floats (64 bytes, one cache line). */
function align(floats: number): number {
  return Math.ceil(floats / 16) * 16;
}

/**
 * Packs op(A) from a transposed A (stored k×m at src[srcStart]) into panels of MR rows:
 * A(tile·MR + r, p) goes to dst[dstStart + (tile·k + p)·MR + r], with rows past m set to 0.
 */
function packTransposedA(
  src: Float32Array,
  srcStart: number,
  dst: Float32Array,
  dstStart: number,
  m: number,
  k: number,
): void {
  const tiles = Math.ceil(m / MR);
  for (let tile = 0; tile < tiles; tile++) {
    const i0 = tile * MR;
    const rows = Math.min(MR, m - i0);
    let d = dstStart + tile * k * MR;
    for (let p = 0; p < k; p++) {
      const s = srcStart + p * m + i0;
      for (let r = 0; r < rows; r++) dst[d + r] = src[s + r];
      for (let r = rows; r < MR; r++) dst[d + r] = 0;
      d += MR;
    }
  }
}

/**
 * Packs B (stored k×n, or n×k when `transB`) into panels of NR columns: B(p, tile·NR + c) goes to
 * dst[dstStart + (tile·k + p)·NR + c], with columns past n set to 0.
 */
function packB(
  src: Float32Array,
  srcStart: number,
  transB: boolean,
  dst: Float32Array,
  dstStart: number,
  n: number,
  k: number,
): void {
  const tiles = Math.ceil(n / NR);
  // B(p, j) is at srcStart + p·pStride + j·jStride.
  const pStride = transB ? 1 : n;
  const jStride = transB ? k : 1;
  for (let tile = 0; tile < tiles; tile++) {
    const j0 = tile * NR;
    const cols = Math.min(NR, n - j0);
    let d = dstStart + tile * k * NR;
    for (let p = 0; p < k; p++) {
      const s = srcStart + p * pStride + j0 * jStride;
      for (let c = 0; c < cols; c++) dst[d + c] = src[s + c * jStride];
      for (let c = cols; c < NR; c++) dst[d + c] = 0;
      d += NR;
    }
  }
}

/** Copies the valid m×n part of each batch entry of C out of the padded heap layout. */
function copyOut(
  heap: Float32Array,
  cStart: number,
  cEntry: number,
  ldc: number,
  out: Float32Array,
  batch: number,
  m: number,
  n: number,
): void {
  if (ldc === n && cEntry === m * n) {
    out.set(heap.subarray(cStart, cStart + batch * m * n));
    return;
  }
  for (let e = 0; e < batch; e++) {
    const entry = cStart + e * cEntry;
    if (ldc === n) {
      out.set(heap.subarray(entry, entry + m * n), e * m * n);
      continue;
    }
    for (let i = 0; i < m; i++) {
      const row = entry + i * ldc;
      out.set(heap.subarray(row, row + n), (e * m + i) * n);
    }
  }
}
