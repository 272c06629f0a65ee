/**
 * The fast CPU backend's exp-bound ops on the WebAssembly SIMD exp of `exp_kernel.ts`: GELU, its
 * backward and softmax run wholly in WebAssembly (softmax sums in float32), while cross-entropy
 * takes row maxima and sums in TypeScript (sums in float64, as the reference does) and runs one
 * exp over all rows at once. Inputs are validated by the caller.
 *
 * Against the float64 reference, results differ by the exp's few float32 ulps and by rounding
 * each shifted logit x − max to float32 before the exp, a relative error of about 6e-8·|x − max|
 * in each probability.
 */

import { encodeExpModule } from "./exp_kernel.ts";

const PAGE_BYTES = 65536;
/** 4 GiB of addresses: the most a 32-bit memory can hold. Pages are committed only on growth. */
const MAX_PAGES = 65536;

type KernelFunction = (...args: number[]) => void;
type KernelName = "exp" | "gelu" | "geluBackward" | "softmaxRows";

/** One WebAssembly instance of the exp kernels with its own linear memory, grown on demand. */
export class WasmExp {
  private readonly memory: WebAssembly.Memory;
  private readonly kernels: Record<KernelName, KernelFunction>;
  private heap: Float32Array;

  private constructor(
    memory: WebAssembly.Memory,
    kernels: Record<KernelName, KernelFunction>,
  ) {
    this.memory = memory;
    this.kernels = kernels;
    this.heap = new Float32Array(memory.buffer);
  }

  /** Compiles the kernels synchronously; the module is a few kilobytes. */
  static create(): WasmExp {
    const memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES });
    const bytes = encodeExpModule({ initialPages: 1, maximumPages: MAX_PAGES, shared: false });
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
    const exports = instance.exports as Record<string, KernelFunction>;
    return new WasmExp(memory, {
      exp: exports.exp,
      gelu: exports.gelu,
      geluBackward: exports.geluBackward,
      softmaxRows: exports.softmaxRows,
    });
  }

  /** y = GELU(x), tanh approximation; x and y have equal lengths. */
  gelu(x: Float32Array, y: Float32Array): void {
    if (x.length === 0) return;
    const stride = padded(x.length);
    this.reserve(2 * stride);
    this.heap.set(x, 0);
    this.kernels.gelu(0, stride * 4, stride / 4);
    y.set(this.heap.subarray(stride, stride + x.length));
  }

  /** dx = dy · GELU′(x); all three have equal lengths. */
  geluBackward(x: Float32Array, dy: Float32Array, dx: Float32Array): void {
    if (x.length === 0) return;
    const stride = padded(x.length);
    this.reserve(3 * stride);
    this.heap.set(x, 0);
    this.heap.set(dy, stride);
    this.kernels.geluBackward(0, stride * 4, 2 * stride * 4, stride / 4);
    dx.set(this.heap.subarray(2 * stride, 2 * stride + x.length));
  }

  /**
   * Row softmax of x [rows, cols] into y with the reference's causal mask: with T = causalQueries
   * > 0, row r sees columns c ≤ (r mod T) + (cols − T), hidden columns are 0 and a row that sees
   * none is all 0. rows is a multiple of T when T > 0.
   */
  softmax(
    x: Float32Array,
    y: Float32Array,
    rows: number,
    cols: number,
    causalQueries: number,
  ): void {
    if (x.length === 0) return;
    // Rows sit in the heap at a stride of whole vectors. Hidden and padding columns contain
    // −Infinity, whose exp is 0. A fully hidden row contains zeros, since a row of only −Infinity
    // would give NaN, and its output is set to 0 afterwards.
    const width = padded(cols);
    this.reserve(rows * width);
    const heap = this.heap;
    const visibleOf = (r: number) =>
      causalQueries === 0 ? cols : Math.min(cols, (r % causalQueries) + (cols - causalQueries) + 1);

    if (width === cols) heap.set(x);
    for (let r = 0; r < rows; r++) {
      const start = r * width;
      const visible = visibleOf(r);
      if (width !== cols) heap.set(x.subarray(r * cols, (r + 1) * cols), start);
      if (visible <= 0) heap.fill(0, start, start + width);
      else if (visible < width) heap.fill(-Infinity, start + visible, start + width);
    }
    this.kernels.softmaxRows(0, 0, rows, width);

    if (width === cols) y.set(heap.subarray(0, rows * cols));
    for (let r = 0; r < rows; r++) {
      if (width !== cols) y.set(heap.subarray(r * width, r * width + cols), r * cols);
      if (visibleOf(r) <= 0) y.fill(0, r * cols, (r + 1) * cols);
    }
  }

  /**
   * Writes the log-sum-exp of each row of logits [rows, cols] into lse and returns the sum of
   * lse − logit[target] over rows whose target is not ignoreIndex, with the count of those rows.
   * Targets must already be valid.
   */
  crossEntropy(
    logits: Float32Array,
    targets: Int32Array,
    lse: Float32Array,
    rows: number,
    cols: number,
    ignoreIndex: number,
  ): { lossSum: number; counted: number } {
    const heap = this.shiftedRows(logits.length);
    const maxima = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      let max = -Infinity;
      for (let c = 0; c < cols; c++) max = Math.max(max, logits[start + c]);
      for (let c = 0; c < cols; c++) heap[start + c] = logits[start + c] - max;
      maxima[r] = max;
    }
    this.expInPlace(logits.length);

    let lossSum = 0;
    let counted = 0;
    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      let sum = 0;
      for (let c = 0; c < cols; c++) sum += heap[start + c];
      const rowLse = maxima[r] + Math.log(sum);
      lse[r] = rowLse;
      if (targets[r] === ignoreIndex) continue;
      lossSum += rowLse - logits[start + targets[r]];
      counted++;
    }
    return { lossSum, counted };
  }

  /**
   * dlogits = (exp(logits − lse) − onehot(target)) · scale on rows whose target is not
   * ignoreIndex and 0 on the others. Targets must already be valid.
   */
  crossEntropyBackward(
    logits: Float32Array,
    targets: Int32Array,
    lse: Float32Array,
    scale: number,
    dlogits: Float32Array,
    rows: number,
    cols: number,
    ignoreIndex: number,
  ): void {
    const heap = this.shiftedRows(logits.length);
    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      const shift = lse[r];
      for (let c = 0; c < cols; c++) heap[start + c] = logits[start + c] - shift;
    }
    this.expInPlace(logits.length);

    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      const target = targets[r];
      if (target === ignoreIndex) {
        dlogits.fill(0, start, start + cols);
        continue;
      }
      for (let c = 0; c < cols; c++) dlogits[start + c] = heap[start + c] * scale;
      dlogits[start + target] = (heap[start + target] - 1) * scale;
    }
  }

  /** Reserves `size` floats (padded to whole vectors) at address 0 and returns the heap view. */
  private shiftedRows(size: number): Float32Array {
    this.reserve(padded(size));
    return this.heap;
  }

  /** Replaces the first `size` floats of the heap (padded to whole vectors) by their exp. */
  private expInPlace(size: number): void {
    if (size === 0) return;
    this.kernels.exp(0, 0, padded(size) / 4);
  }

  /** Grows the memory to hold `floats` floats and refreshes the view. */
  private reserve(floats: number): void {
    const bytes = floats * 4;
    const current = this.memory.buffer.byteLength;
    if (bytes > current) {
      const pages = Math.ceil((bytes - current) / PAGE_BYTES);
      if (current / PAGE_BYTES + pages > MAX_PAGES) {
        throw new Error(
          `exp kernels: the operands need ${bytes} bytes, over the 4 GiB of a WebAssembly ` +
            "memory; split the op or use the reference cpu backend",
        );
      }
      this.memory.grow(pages);
    }
    if (this.heap.buffer !== this.memory.buffer) this.heap = new Float32Array(this.memory.buffer);
  }
}

/** Rounds a float count up to whole 4-float vectors. */
function padded(size: number): number {
  return Math.ceil(size / 4) * 4;
}
