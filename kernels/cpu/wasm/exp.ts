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
import { HEAP_MEMORY_IMPORT, type WasmHeap } from "./heap.ts";

type KernelFunction = (...args: number[]) => void;
type KernelName = "exp" | "gelu" | "geluBackward" | "softmaxRows";

/**
 * One WebAssembly instance of the exp kernels on the heap's memory. Inputs and outputs that are
 * heap views are used in place; other arrays pass through scratch blocks of the heap.
 */
export class WasmExp {
  private constructor(
    private readonly heap: WasmHeap,
    private readonly kernels: Record<KernelName, KernelFunction>,
  ) {}

  /** Compiles the kernels synchronously; the module is a few kilobytes. */
  static create(heap: WasmHeap): WasmExp {
    const instance = heap.instantiate(encodeExpModule(HEAP_MEMORY_IMPORT));
    const exports = instance.exports as Record<string, KernelFunction>;
    return new WasmExp(heap, {
      exp: exports.exp,
      gelu: exports.gelu,
      geluBackward: exports.geluBackward,
      softmaxRows: exports.softmaxRows,
    });
  }

  /** y = GELU(x), tanh approximation; x and y have equal lengths. */
  gelu(x: Float32Array, y: Float32Array): void {
    if (x.length === 0) return;
    const [xIn, yOut] = [this.input(x), this.output(y)];
    this.kernels.gelu(this.heap.address(xIn), this.heap.address(yOut), padded(x.length) / 4);
    this.releaseInputs([xIn, x]);
    this.deliver(yOut, y);
  }

  /** dx = dy · GELU′(x); all three have equal lengths. */
  geluBackward(x: Float32Array, dy: Float32Array, dx: Float32Array): void {
    if (x.length === 0) return;
    const [xIn, dyIn, dxOut] = [this.input(x), this.input(dy), this.output(dx)];
    const address = (view: Float32Array) => this.heap.address(view);
    this.kernels.geluBackward(address(xIn), address(dyIn), address(dxOut), padded(x.length) / 4);
    this.releaseInputs([xIn, x], [dyIn, dy]);
    this.deliver(dxOut, dx);
  }

  /**
   * Returns x itself when it is a heap view, which the kernels may read up to its block's end (a
   * whole number of vectors), or a scratch copy of it.
   */
  private input(x: Float32Array): Float32Array {
    if (this.heap.address(x) >= 0) return x;
    const copy = this.scratch(x.length);
    copy.set(x);
    return copy;
  }

  /** Returns y itself when it is a heap view, or a scratch block that `deliver` copies into y. */
  private output(y: Float32Array): Float32Array {
    return this.heap.address(y) >= 0 ? y : this.scratch(y.length);
  }

  /** Copies a scratch output into the caller's array and releases it; nothing when in place. */
  private deliver(used: Float32Array, y: Float32Array): void {
    if (used === y) return;
    y.set(used);
    this.heap.release(used);
  }

  /** Releases each scratch copy from `input`; nothing for an array that was used in place. */
  private releaseInputs(...pairs: [Float32Array, Float32Array][]): void {
    for (const [used, x] of pairs) if (used !== x) this.heap.release(used);
  }

  /** Allocates a heap block of `floats` floats, padded to whole vectors. */
  private scratch(floats: number): Float32Array {
    return this.heap.scratch(
      padded(floats),
      "exp kernels",
      "split the op or use the reference cpu backend",
    );
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
    const xAddress = this.heap.address(x);
    const yAddress = this.heap.address(y);
    if (cols % 4 === 0 && xAddress >= 0 && yAddress >= 0) {
      this.softmaxInHeap(x, y, xAddress, yAddress, rows, cols, causalQueries);
      return;
    }

    // Rows sit in the heap at a stride of whole vectors. Hidden and padding columns contain
    // −Infinity, whose exp is 0. A fully hidden row contains zeros, since a row of only −Infinity
    // would give NaN, and its output is set to 0 afterwards.
    const width = padded(cols);
    const work = this.scratch(rows * width);
    const visibleOf = (r: number) => visibleColumns(r, cols, causalQueries);

    if (width === cols) work.set(x);
    for (let r = 0; r < rows; r++) {
      const start = r * width;
      const visible = visibleOf(r);
      if (width !== cols) work.set(x.subarray(r * cols, (r + 1) * cols), start);
      if (visible <= 0) work.fill(0, start, start + width);
      else if (visible < width) work.fill(-Infinity, start + visible, start + width);
    }
    const address = this.heap.address(work);
    this.kernels.softmaxRows(address, address, rows, width);

    if (width === cols) y.set(work.subarray(0, rows * cols));
    for (let r = 0; r < rows; r++) {
      if (width !== cols) y.set(work.subarray(r * width, r * width + cols), r * cols);
      if (visibleOf(r) <= 0) y.fill(0, r * cols, (r + 1) * cols);
    }
    this.heap.release(work);
  }

  /**
   * Softmax of heap views whose rows are whole vectors. Without a mask it is one kernel call from
   * x to y. With the causal mask it copies x into y and runs the kernel in place on each row's
   * visible part, rounded up to whole vectors with −Infinity in the rounding, so masked columns
   * cost no exp. On the tiny GPT's causal [4096, 128] scores that is about half the columns.
   */
  private softmaxInHeap(
    x: Float32Array,
    y: Float32Array,
    xAddress: number,
    yAddress: number,
    rows: number,
    cols: number,
    causalQueries: number,
  ): void {
    if (causalQueries === 0) {
      this.kernels.softmaxRows(xAddress, yAddress, rows, cols);
      return;
    }

    y.set(x);
    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      const visible = visibleColumns(r, cols, causalQueries);
      if (visible <= 0) {
        y.fill(0, start, start + cols);
        continue;
      }
      const width = padded(visible);
      y.fill(-Infinity, start + visible, start + width);
      const row = yAddress + start * 4;
      this.kernels.softmaxRows(row, row, 1, width);
      y.fill(0, start + width, start + cols);
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
    const shifted = this.scratch(logits.length);
    const maxima = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      let max = -Infinity;
      for (let c = 0; c < cols; c++) max = Math.max(max, logits[start + c]);
      for (let c = 0; c < cols; c++) shifted[start + c] = logits[start + c] - max;
      maxima[r] = max;
    }
    this.expInPlace(shifted);

    let lossSum = 0;
    let counted = 0;
    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      let sum = 0;
      for (let c = 0; c < cols; c++) sum += shifted[start + c];
      const rowLse = maxima[r] + Math.log(sum);
      lse[r] = rowLse;
      if (targets[r] === ignoreIndex) continue;
      lossSum += rowLse - logits[start + targets[r]];
      counted++;
    }
    this.heap.release(shifted);
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
    const shifted = this.scratch(logits.length);
    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      const shift = lse[r];
      for (let c = 0; c < cols; c++) shifted[start + c] = logits[start + c] - shift;
    }
    this.expInPlace(shifted);

    for (let r = 0; r < rows; r++) {
      const start = r * cols;
      const target = targets[r];
      if (target === ignoreIndex) {
        dlogits.fill(0, start, start + cols);
        continue;
      }
      for (let c = 0; c < cols; c++) dlogits[start + c] = shifted[start + c] * scale;
      dlogits[start + target] = (shifted[start + target] - 1) * scale;
    }
    this.heap.release(shifted);
  }

  /** Replaces a scratch block's floats, padded to whole vectors, by their exp. */
  private expInPlace(block: Float32Array): void {
    if (block.length === 0) return;
    const address = this.heap.address(block);
    this.kernels.exp(address, address, padded(block.length) / 4);
  }
}

/**
 * Returns the number of leading columns of row r that the reference's causal mask leaves visible
 * (all of them when causalQueries is 0), or 0 or less for a fully hidden row.
 */
function visibleColumns(r: number, cols: number, causalQueries: number): number {
  if (causalQueries === 0) return cols;
  return Math.min(cols, (r % causalQueries) + (cols - causalQueries) + 1);
}

/** Rounds a float count up to whole 4-float vectors. */
function padded(size: number): number {
  return Math.ceil(size / 4) * 4;
}
