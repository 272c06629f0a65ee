/**
 * The fast CPU matmul: runs the SIMD kernel of `gemm_kernel.ts` on float32 operands in the
 * backend's WebAssembly heap (`heap.ts`).
 *
 * A row-major A in the heap is read where it is, and C is written straight into the output when
 * its rows are whole tiles wide. A transposed A and B in either layout are packed into panels of
 * a scratch block, an O(size) copy against the product's O(m·n·k) work. Results sum each C(i, j)
 * over k in index order in float32, so they differ from the float64-accumulating reference by
 * float32 rounding only.
 *
 * With two threads a worker (`gemm_worker.ts`) runs the kernel on the same memory, and each large
 * product is split by rows of tiles: the calling thread computes the first half while the worker
 * computes the rest. Each C(i, j) is still one thread's sum in index order, so results match one
 * thread's bit for bit.
 */

import { Worker } from "node:worker_threads";
import type { MatmulSpec } from "../../backend.ts";
import {
  encodeGemmModule,
  type GemmKernels,
  gemmKernels,
  supportsRelaxedSimd,
} from "./gemm_kernel.ts";
import {
  CONTROL,
  runTileRows,
  STATUS_BUSY,
  STATUS_FAILED,
  type TileJob,
  writeJob,
} from "./gemm_tiles.ts";
import { HEAP_MEMORY_IMPORT, type WasmHeap } from "./heap.ts";

/**
 * Tile of C held in registers: 6×8 floats are 12 v128 accumulators, which with 2 vectors of B and
 * one broadcast of A fit the 16 SIMD registers of x86-64. Among the tiles 2×16, 3×16, 4×8, 4×12,
 * 5×12, 6×8 and 8×8, the kernel alone ran fastest with 6×8 on 512×512×512 (40 GFLOP/s against 37
 * for 2×16 in the same run, one thread of a 2-core AMD EPYC VM).
 */
const MR = 6;
const NR = 8;

/**
 * Products of fewer floating-point operations run on the main thread alone: a hand-off to the
 * worker and back takes about 5 µs here, and 2²¹ operations take about 50 µs at 40 GFLOP/s.
 */
const PARALLEL_MIN_FLOPS = 2 ** 21;
/**
 * Bytes of B's panels that one pass over the rows of A reads: a quarter of the 1 MiB L2 cache per
 * core of the AMD EPYC (Zen 5) VM this was tuned on. The 128×512×1024 weight gradient of the
 * tiny GPT, whose 2 MiB of packed B had every row of tiles stream it from L3, ran at 27 GFLOP/s
 * on one thread before the blocking.
 */
const B_BLOCK_BYTES = 256 * 1024;
/**
 * Maximum k for which a transposed A is read in place: a tile then reads k cache lines of A, 16
 * KiB at k = 256, which stay in the L1 cache while the tile's row of C is computed.
 */
const TRANSPOSED_A_IN_PLACE_MAX_K = 256;
/** How long the main thread waits for the worker's share before it reports the worker stuck. */
const WORKER_TIMEOUT_MS = 60_000;

export interface WasmGemmOptions {
  /**
   * 2 splits products of at least 2²¹ operations between the main thread and one worker on a
   * shared memory; 1 runs everything on the calling thread. Default: 2 when the machine reports
   * at least 2 logical processors.
   */
  threads?: 1 | 2;
}

/**
 * One WebAssembly instance of the kernel on the heap's memory, and with two threads a worker that
 * runs a second instance on the same memory.
 */
export class WasmGemm {
  private readonly kernels: GemmKernels;
  private readonly bytes: Uint8Array<ArrayBuffer>;
  /** Shared with the worker; laid out as `CONTROL` describes. Null with one thread. */
  private readonly control: Int32Array | null;
  private worker: Worker | null = null;
  /** Whether the kernel uses fused multiply-adds (relaxed SIMD) or separate mul and add. */
  readonly fma: boolean;
  /** Threads that share large products: 1, or 2 with a worker. */
  threads: 1 | 2;

  private constructor(
    private readonly heap: WasmHeap,
    bytes: Uint8Array<ArrayBuffer>,
    fma: boolean,
    threads: 1 | 2,
  ) {
    this.bytes = bytes;
    this.kernels = gemmKernels(heap.instantiate(bytes), MR);
    this.fma = fma;
    this.threads = threads;
    this.control = threads === 2
      ? new Int32Array(new SharedArrayBuffer(CONTROL.LENGTH * Int32Array.BYTES_PER_ELEMENT))
      : null;
  }

  /** Compiles the kernel synchronously; the module is a few kilobytes, so this takes milliseconds. */
  static create(heap: WasmHeap, options: WasmGemmOptions = {}): WasmGemm {
    // On a quiet 2-vCPU AMD EPYC VM two threads cut the tiny-GPT step by 14–18% (paired step
    // ratio 0.82–0.86, bench/op_profile.ts --pair-threads). With other jobs busy on both cores the
    // ratio was 0.99–1.01, so there the second thread cost nothing measurable.
    const threads = options.threads ?? ((navigator.hardwareConcurrency ?? 1) >= 2 ? 2 : 1);
    const fma = supportsRelaxedSimd();
    const bytes = encodeGemmModule({ mr: MR, nr: NR, fma }, HEAP_MEMORY_IMPORT);
    return new WasmGemm(heap, bytes, fma, threads);
  }

  /**
   * Starts the worker if needed and resolves true once it takes work, or false with one thread,
   * when it fails to start, or after `timeoutMs`. Products before that run on the calling thread.
   */
  async waitForWorker(timeoutMs = 10_000): Promise<boolean> {
    if (this.threads !== 2 || this.control === null) return false;
    if (this.worker === null) this.startWorker();
    const deadline = performance.now() + timeoutMs;
    while (Atomics.load(this.control, CONTROL.READY) !== 1) {
      if (this.threads !== 2 || performance.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return true;
  }

  /** Stops the worker, if one was started. */
  dispose(): void {
    if (this.worker === null || this.control === null) return;
    Atomics.store(this.control, CONTROL.STOP, 1);
    Atomics.add(this.control, CONTROL.SEQUENCE, 1);
    Atomics.notify(this.control, CONTROL.SEQUENCE);
    this.worker.terminate();
    this.worker = null;
    // The control block still has READY set, so later products must not hand off to the dead worker.
    this.threads = 1;
  }

  /**
   * Computes the batched product of `spec` from a and b into out. Sizes must already be checked:
   * a holds (aBatched ? batch : 1)·m·k floats, b likewise with k·n, and out batch·m·n.
   *
   * Operands that are views of the heap are used in place where their layout allows: a row-major
   * A is read where it is, and C is written straight into out when n is a multiple of NR. The
   * others pass through scratch blocks of the heap.
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
    const aEntries = aBatched ? batch : 1;
    const bEntries = bBatched ? batch : 1;
    const heap = this.heap;

    // A row-major A is read in place (or after one copy). A transposed A is read in place while a
    // tile's k strided rows fit the L1 cache beside B's panel, and is packed into panels of MR
    // rows (the last one zero-padded) for longer k.
    const aPacked = transA && k > TRANSPOSED_A_IN_PLACE_MAX_K;
    const aInPlace = !aPacked && heap.address(a) >= 0;
    const aEntry = aPacked ? mTiles * MR * k : m * k;
    const aScratch = aInPlace ? null : this.scratch(aEntries * aEntry);
    const bEntry = nTiles * NR * k;
    const bScratch = this.scratch(bEntries * bEntry);
    // C's row stride is n when the kernel writes into out. Otherwise it is a whole number of tiles,
    // which keeps edge tiles off the next row, and the result leaves through a scratch block.
    const cInPlace = n % NR === 0 && heap.address(out) >= 0;
    const ldc = cInPlace ? n : nTiles * NR;
    const cEntry = m * ldc;
    const cScratch = cInPlace ? null : this.scratch(batch * cEntry);

    if (aScratch !== null && aPacked) {
      const strips = this.stripCopy(a, aScratch, this.kernels.copyStrips6);
      for (let e = 0; e < aEntries; e++) {
        packTransposedA(a, e * m * k, aScratch, e * aEntry, m, k, strips);
      }
    } else if (aScratch !== null) {
      aScratch.set(a);
    }
    const strips = transB ? null : this.stripCopy(b, bScratch, this.kernels.copyStrips8);
    for (let e = 0; e < bEntries; e++) {
      packB(b, e * k * n, transB, bScratch, e * bEntry, n, k, strips);
    }

    const job: TileJob = {
      a: heap.address(aScratch ?? a),
      b: heap.address(bScratch),
      c: heap.address(cScratch ?? out),
      aEntryBytes: aBatched ? aEntry * 4 : 0,
      bEntryBytes: bBatched ? bEntry * 4 : 0,
      cEntryBytes: cEntry * 4,
      m,
      mTiles,
      nTiles,
      nBlockTiles: Math.max(1, Math.floor(B_BLOCK_BYTES / (k * NR * 4))),
      bPanelBytes: k * NR * 4,
      cTileBytes: NR * 4,
      k,
      // A(i, p) is at a + tile·aTileBytes + r·aRowBytes + p·aStepBytes for i = tile·MR + r.
      ...(aPacked
        ? { aTileBytes: MR * k * 4, aRowBytes: 4, aStepBytes: MR * 4 }
        : transA
        ? { aTileBytes: MR * 4, aRowBytes: 4, aStepBytes: m * 4 }
        : { aTileBytes: MR * k * 4, aRowBytes: k * 4, aStepBytes: 4 }),
      ldcBytes: ldc * 4,
      mr: MR,
    };
    const tileRows = batch * mTiles;
    if (this.threads === 2 && tileRows >= 2 && 2 * batch * m * n * k >= PARALLEL_MIN_FLOPS) {
      this.runShared(job, tileRows);
    } else {
      runTileRows(this.kernels, job, 0, tileRows);
    }

    if (cScratch !== null) copyOut(cScratch, ldc, out, batch, m, n);
    for (const block of [aScratch, bScratch, cScratch]) if (block !== null) heap.release(block);
  }

  /** The WebAssembly strip copy from src to dst in float indices, or null when src is not in the heap. */
  private stripCopy(
    src: Float32Array,
    dst: Float32Array,
    kernel: (...args: number[]) => void,
  ): StripCopy | null {
    const srcAddress = this.heap.address(src);
    const dstAddress = this.heap.address(dst);
    if (srcAddress < 0 || dstAddress < 0) return null;
    return (srcStart, dstStart, count, srcStride) =>
      kernel(srcAddress + srcStart * 4, dstAddress + dstStart * 4, count, srcStride * 4);
  }

  /** Allocates a heap block of `floats` floats for one product's packed operands or result. */
  private scratch(floats: number): Float32Array {
    return this.heap.scratch(floats, "matmul", "split the batch or use the reference cpu backend");
  }

  /**
   * Runs the first half of the tile rows here and the second half on the worker, or all of them
   * here while the worker is starting (it is started on the first large product).
   */
  private runShared(job: TileJob, tileRows: number): void {
    const control = this.control!;
    if (Atomics.load(control, CONTROL.READY) !== 1) {
      if (this.worker === null) this.startWorker();
      runTileRows(this.kernels, job, 0, tileRows);
      return;
    }

    const split = Math.ceil(tileRows / 2);
    writeJob(control, job);
    control[CONTROL.FROM] = split;
    control[CONTROL.TO] = tileRows;
    Atomics.store(control, CONTROL.STATUS, STATUS_BUSY);
    Atomics.add(control, CONTROL.SEQUENCE, 1);
    Atomics.notify(control, CONTROL.SEQUENCE);
    runTileRows(this.kernels, job, 0, split);

    const result = Atomics.wait(control, CONTROL.STATUS, STATUS_BUSY, WORKER_TIMEOUT_MS);
    if (result === "timed-out") {
      throw new Error(
        `matmul: the gemm worker did not finish its tile rows within ${WORKER_TIMEOUT_MS} ms; ` +
          "create the backend with one thread",
      );
    }
    if (Atomics.load(control, CONTROL.STATUS) === STATUS_FAILED) {
      throw new Error("matmul: the gemm worker failed (its error is on stderr)");
    }
  }

  /** Starts the worker; where workers are unavailable, warns once and stays on one thread. */
  private startWorker(): void {
    try {
      const worker = new Worker(new URL("./gemm_worker.ts", import.meta.url), {
        workerData: { memory: this.heap.memory, control: this.control, bytes: this.bytes, mr: MR },
      });
      // The worker blocks in Atomics.wait between products; unref lets the process exit anyway.
      worker.unref();
      worker.on("error", (error) => {
        console.warn(`matmul: the gemm worker stopped (${error}); using one thread`);
        this.threads = 1;
      });
      this.worker = worker;
    } catch (error) {
      console.warn(`matmul: cannot start a gemm worker (${error}); using one thread`);
      this.threads = 1;
    }
  }
}

/**
 * Copies `count` strips from src[srcStart + p·srcStride] to dst[dstStart + p·width], each as wide
 * as the kernel it wraps (6 or 8 floats). Indices are in floats.
 */
type StripCopy = (srcStart: number, dstStart: number, count: number, srcStride: number) => void;

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
  strips: StripCopy | null,
): void {
  const tiles = Math.ceil(m / MR);
  for (let tile = 0; tile < tiles; tile++) {
    const i0 = tile * MR;
    const rows = Math.min(MR, m - i0);
    let d = dstStart + tile * k * MR;
    if (rows === MR && strips !== null) {
      strips(srcStart + i0, d, k, m);
      continue;
    }
    if (rows === MR) {
      // Full tiles, unrolled: the general loop below cost about a third of the product's time
      // for the step's 128×128×1024 weight gradients.
      for (let s = srcStart + i0; d < dstStart + (tile + 1) * k * MR; s += m, d += MR) {
        dst[d] = src[s];
        dst[d + 1] = src[s + 1];
        dst[d + 2] = src[s + 2];
        dst[d + 3] = src[s + 3];
        dst[d + 4] = src[s + 4];
        dst[d + 5] = src[s + 5];
      }
      continue;
    }
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
  strips: StripCopy | null,
): void {
  const tiles = Math.ceil(n / NR);
  // B(p, j) is at srcStart + p·pStride + j·jStride.
  const pStride = transB ? 1 : n;
  const jStride = transB ? k : 1;
  for (let tile = 0; tile < tiles; tile++) {
    const j0 = tile * NR;
    const cols = Math.min(NR, n - j0);
    let d = dstStart + tile * k * NR;
    if (cols === NR && !transB && strips !== null) {
      strips(srcStart + j0, d, k, n);
      continue;
    }
    if (cols === NR) {
      // Full panels, unrolled, as in packTransposedA.
      const j = jStride;
      for (let p = 0, s = srcStart + j0 * jStride; p < k; p++, s += pStride, d += NR) {
        dst[d] = src[s];
        dst[d + 1] = src[s + j];
        dst[d + 2] = src[s + 2 * j];
        dst[d + 3] = src[s + 3 * j];
        dst[d + 4] = src[s + 4 * j];
        dst[d + 5] = src[s + 5 * j];
        dst[d + 6] = src[s + 6 * j];
        dst[d + 7] = src[s + 7 * j];
      }
      continue;
    }
    for (let p = 0; p < k; p++) {
      const s = srcStart + p * pStride + j0 * jStride;
      for (let c = 0; c < cols; c++) dst[d + c] = src[s + c * jStride];
      for (let c = cols; c < NR; c++) dst[d + c] = 0;
      d += NR;
    }
  }
}

/** Copies the valid m×n part of each batch entry of C out of a result with row stride ldc. */
function copyOut(
  c: Float32Array,
  ldc: number,
  out: Float32Array,
  batch: number,
  m: number,
  n: number,
): void {
  for (let row = 0; row < batch * m; row++) {
    out.set(c.subarray(row * ldc, row * ldc + n), row * n);
  }
}
