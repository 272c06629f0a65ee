/**
 * Float32 loops for the fast CPU backend's scale, broadcast binary ops, transpose and softmax
 * backward. Each is a monomorphic loop over typed arrays with no per-element closure or multi-axis
 * index arithmetic, where the reference versions are general over ops, ranks and precisions. Once
 * matmul ran in WebAssembly, the reference transposes and broadcast adds took about a third of the
 * tiny-GPT training step together with GELU (a per-op timing on a 2-core AMD EPYC VM). Inputs are
 * validated by the caller.
 */

import type { BinaryOp } from "../backend.ts";
import type { CpuArray } from "./storage.ts";

export function scale(x: Float32Array, factor: number, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) y[i] = x[i] * factor;
}

/**
 * `a op b` where b repeats every b.length elements of a: equal shapes, or b broadcast along
 * leading axes only (a bias row added to every row). a.length is a multiple of b.length.
 */
export function binaryRepeating(
  op: BinaryOp,
  a: Float32Array,
  b: Float32Array,
  out: Float32Array,
): void {
  const period = b.length;
  for (let start = 0; start < a.length; start += period) {
    switch (op) {
      case "add":
        for (let i = 0; i < period; i++) out[start + i] = a[start + i] + b[i];
        break;
      case "sub":
        for (let i = 0; i < period; i++) out[start + i] = a[start + i] - b[i];
        break;
      case "mul":
        for (let i = 0; i < period; i++) out[start + i] = a[start + i] * b[i];
        break;
      case "div":
        for (let i = 0; i < period; i++) out[start + i] = a[start + i] / b[i];
        break;
    }
  }
}

/**
 * Views `shape` as [outer, d1, mid, d2, inner] around the two axes to swap, d1 the lower one.
 * Every two-axis transpose of any rank writes this view as [outer, d2, mid, d1, inner].
 */
export function swapAxesView(
  shape: readonly number[],
  axis1: number,
  axis2: number,
): { outer: number; d1: number; mid: number; d2: number; inner: number } {
  const lo = Math.min(axis1, axis2);
  const hi = Math.max(axis1, axis2);
  const size = (from: number, to: number) => shape.slice(from, to).reduce((p, d) => p * d, 1);
  return {
    outer: size(0, lo),
    d1: shape[lo],
    mid: size(lo + 1, hi),
    d2: shape[hi],
    inner: size(hi + 1, shape.length),
  };
}

/**
 * Swaps axes axis1 < axis2 of x (shape `shape`) into y. The array is viewed as
 * [outer, d1, mid, d2, inner] and written as [outer, d2, mid, d1, inner], copying runs of
 * `inner` contiguous elements.
 */
export function swapAxes(
  x: CpuArray,
  y: CpuArray,
  shape: readonly number[],
  axis1: number,
  axis2: number,
): void {
  const { outer, d1, mid, d2, inner } = swapAxesView(shape, axis1, axis2);

  // Strides of x, in elements, along j1 (axis lo), m (mid) and j2 (axis hi).
  const xJ2 = inner;
  const xM = d2 * inner;
  const xJ1 = mid * xM;
  const block = d1 * xJ1;
  let o = 0;
  for (let b = 0; b < outer; b++) {
    const base = b * block;
    for (let j2 = 0; j2 < d2; j2++) {
      for (let m = 0; m < mid; m++) {
        for (let j1 = 0; j1 < d1; j1++) {
          const s = base + j1 * xJ1 + m * xM + j2 * xJ2;
          for (let i = 0; i < inner; i++) y[o + i] = x[s + i];
          o += inner;
        }
      }
    }
  }
}

/**
 * dx = y ⊙ (dy − Σ dy ⊙ y) per row of `cols`, the dot product summed in float64 as the reference
 * does. The same loop as the reference's, but over Float32Array only, which V8 compiles to
 * tighter code than the reference's loop over float32 or float64 storage.
 */
export function softmaxBackward(
  y: Float32Array,
  dy: Float32Array,
  dx: Float32Array,
  rows: number,
  cols: number,
): void {
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    const end = start + cols;
    let dot = 0;
    for (let i = start; i < end; i++) dot += dy[i] * y[i];
    for (let i = start; i < end; i++) dx[i] = y[i] * (dy[i] - dot);
  }
}

/**
 * RMSNorm of rows of `cols`: y = x · rstd · gamma with rstd = 1 / sqrt(mean(x²) + eps), the sum
 * of squares in float64 as the reference does. The reference's loop over Float32Array only.
 */
export function rmsNorm(
  x: Float32Array,
  gamma: Float32Array,
  y: Float32Array,
  rstd: Float32Array,
  cols: number,
  eps: number,
): void {
  for (let r = 0, start = 0; start < x.length; r++, start += cols) {
    let squares = 0;
    for (let c = 0; c < cols; c++) squares += x[start + c] * x[start + c];
    const inv = 1 / Math.sqrt(squares / cols + eps);

    for (let c = 0; c < cols; c++) y[start + c] = x[start + c] * inv * gamma[c];
    rstd[r] = inv;
  }
}

/**
 * RMSNorm backward: dx = rstd · (g − x̂ · mean(g ⊙ x̂)) with g = dy ⊙ gamma and x̂ = x · rstd, and
 * dgamma = Σ_rows dy ⊙ x̂, summed in float64. The reference's loop over Float32Array only.
 */
export function rmsNormBackward(
  x: Float32Array,
  gamma: Float32Array,
  rstd: Float32Array,
  dy: Float32Array,
  dx: Float32Array,
  dgamma: Float32Array,
  cols: number,
): void {
  const dgammaSums = new Float64Array(cols);
  const xhat = new Float64Array(cols);
  const g = new Float64Array(cols);
  for (let r = 0, start = 0; start < x.length; r++, start += cols) {
    const inv = rstd[r];
    let gxSum = 0;
    for (let c = 0; c < cols; c++) {
      xhat[c] = x[start + c] * inv;
      g[c] = dy[start + c] * gamma[c];
      gxSum += g[c] * xhat[c];
      dgammaSums[c] += dy[start + c] * xhat[c];
    }

    const gxMean = gxSum / cols;
    for (let c = 0; c < cols; c++) dx[start + c] = inv * (g[c] - xhat[c] * gxMean);
  }
  dgamma.set(dgammaSums);
}
