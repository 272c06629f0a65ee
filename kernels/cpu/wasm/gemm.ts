/**
 * The fast CPU matmul: copies float32 operands into WebAssembly linear memory and runs the SIMD
 * kernel of `gemm_kernel.ts` on them.
 *
 * A row-major A is read in place after one bulk copy. A transposed A and B in either layout are
 * packed into panels on the way in, an O(size) copy against the product's O(m·n·k) work. Results
 * sum each C(i, j) over k in index order in float32, so they differ from the float64-accumulating
 * reference by float32 rounding only.
 *
 * With two threads the memory is shared with a worker (`gemm_worker.ts`), and each large product
 * is split by rows of tiles: the calling thread computes the first half while the worker computes
 * the rest. Each C(i, j) is still one thread's sum in index order, so results match one thread's
 * bit for bit.
 */

import { Worker } from "node:worker_threads";
import type { MatmulSpec } from "../../backend.ts";
import { encodeGemmModule, supportsRelaxedSimd } from "./gemm_kernel.ts";
import {
  CONTROL,
  runTileRows,
  STATUS_BUSY,
  STATUS_FAILED,
  type TileJob,
  writeJob,
} from "./gemm_tiles.ts";

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

/**
 * Products of fewer floating-point operations run on the main thread alone: a hand-off to the
 * worker and back takes about 5 µs here, and 2²¹ operations take about 50 µs at 40 GFLOP/s.
 */
const PARALLEL_MIN_FLOPS = 2 ** 21;
/** How long the main thread waits for the worker's share before it reports the worker stuck. */
const WORKER_TIMEOUT_MS = 60_000;

type GemmFunction = (...args: number[]) => void;

export interface WasmGemmOptions {
  /**
   * 2 splits products of at least 2²¹ operations between the main thread and one worker on a
   * shared memory; 1 runs everything on the calling thread. Default: 2 when the machine reports
   * at least 2 logical processors.
   */
  threads?: 1 | 2;
}

/**
 * One WebAssembly instance of the kernel with its own linear memory, grown on demand, and with
 * two threads a worker that runs a second instance on the same memory.
 */
export class WasmGemm {
  private readonly memory: WebAssembly.Memory;
  private readonly gemm: GemmFunction;
  private readonly bytes: Uint8Array<ArrayBuffer>;
  private heap: Float32Array;
  /** Shared with the worker; laid out as `CONTROL` describes. Null with one thread. */
  private readonly control: Int32Array | null;
  private worker: Worker | null = null;
  /** Whether the kernel uses fused multiply-adds (relaxed SIMD) or separate mul and add. */
  readonly fma: boolean;
  /** Threads that share large products: 1, or 2 with a worker. */
  threads: 1 | 2;

  private constructor(
    memory: WebAssembly.Memory,
    bytes: Uint8Array<ArrayBuffer>,
    fma: boolean,
    threads: 1 | 2,
  ) {
    this.memory = memory;
    this.bytes = bytes;
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
    this.gemm = instance.exports.gemm as GemmFunction;
    this.heap = new Float32Array(memory.buffer);
    this.fma = fma;
    this.threads = threads;
    this.control = threads === 2
      ? new Int32Array(new SharedArrayBuffer(CONTROL.LENGTH * Int32Array.BYTES_PER_ELEMENT))
      : null;
  }

  /** Compiles the kernel synchronously; the module is a few kilobytes, so this takes milliseconds. */
  static create(options: WasmGemmOptions = {}): WasmGemm {
    // On a quiet 2-vCPU AMD EPYC VM two threads cut the tiny-GPT step by 14–18% (paired step
    // ratio 0.82–0.86, bench/op_profile.ts --pair-threads). With other jobs busy on both cores the
    // ratio was 0.99–1.01, so there the second thread cost nothing measurable.
    const threads = options.threads ?? ((navigator.hardwareConcurrency ?? 1) >= 2 ? 2 : 1);
    const shared = threads === 2;
    const fma = supportsRelaxedSimd();
    const memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared });
    const bytes = encodeGemmModule({ mr: MR, nr: NR, fma }, {
      initialPages: 1,
      maximumPages: MAX_PAGES,
      shared,
    });
    return new WasmGemm(memory, bytes, fma, threads);
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

    const job: TileJob = {
      a: aStart * 4,
      b: bStart * 4,
      c: cStart * 4,
      aEntryBytes: aBatched ? aEntry * 4 : 0,
      bEntryBytes: bBatched ? bEntry * 4 : 0,
      cEntryBytes: cEntry * 4,
      mTiles,
      nTiles,
      k,
      aTileBytes: MR * k * 4,
      aRowBytes: transA ? 4 : k * 4,
      aStepBytes: transA ? MR * 4 : 4,
      ldcBytes: ldc * 4,
      mr: MR,
    };
    const tileRows = batch * mTiles;
    if (this.threads === 2 && tileRows >= 2 && 2 * batch * m * n * k >= PARALLEL_MIN_FLOPS) {
      this.runShared(job, tileRows);
    } else {
      runTileRows(this.gemm, job, 0, tileRows);
    }

    copyOut(heap, cStart, cEntry, ldc, out, batch, m, n);
  }

  /**
   * Runs the first half of the tile rows here and the second half on the worker, or all of them
   * here while the worker is starting (it is started on the first large product).
   */
  private runShared(job: TileJob, tileRows: number): void {
    const control = this.control!;
    if (Atomics.load(control, CONTROL.READY) !== 1) {
      if (this.worker === null) this.startWorker();
      runTileRows(this.gemm, job, 0, tileRows);
      return;
    }

    const split = Math.ceil(tileRows / 2);
    writeJob(control, job);
    control[CONTROL.FROM] = split;
    control[CONTROL.TO] = tileRows;
    Atomics.store(control, CONTROL.STATUS, STATUS_BUSY);
    Atomics.add(control, CONTROL.SEQUENCE, 1);
    Atomics.notify(control, CONTROL.SEQUENCE);
    runTileRows(this.gemm, job, 0, split);

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
        workerData: { memory: this.memory, control: this.control, bytes: this.bytes },
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
    // A shared memory's buffer getter returns a new object after growth, so compare lengths.
    if (this.heap.byteLength !== this.memory.buffer.byteLength) {
      this.heap = new Float32Array(this.memory.buffer);
    }
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
): void {
  const tiles = Math.ceil(n / NR);
  // B(p, j) is at srcStart + p·pStride + j·jStride.
  const pStride = transB ? 1 : n;
  const jStride = transB ? k : 1;
  for (let tile = 0; tile < tiles; tile++) {
    const j0 = tile * NR;
    const cols = Math.min(NR, n - j0);
    let d = dstStart + tile * k * NR;
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
