/**
 * Float32 loops for the fast CPU backend's elementwise and layout ops. Each is a monomorphic loop
 * over typed arrays with no per-element closure or multi-axis index arithmetic. The reference
 * versions are general over ops and ranks, and once matmul ran in WebAssembly their GELU,
 * transposes and broadcast adds took about a third of the tiny-GPT training step (a per-op timing
 * of the step on a 2-core AMD EPYC VM). Inputs are validated by the caller.
 */

import type { BinaryOp } from "../backend.ts";
import type { CpuArray } from "./storage.ts";

/** sqrt(2/π) and the cubic coefficient of the tanh approximation of GELU used by GPT-2. */
const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_CUBIC = 0.044715;

/**
 * GELU, tanh approximation. It uses 0.5·(1 + tanh(u)) = 1 / (1 + exp(−2u)), which costs one
 * `Math.exp` instead of `Math.tanh` and does not cancel for large negative x.
 */
export function gelu(x: Float32Array, y: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const u = GELU_C * (v + GELU_CUBIC * v * v * v);
    y[i] = v / (1 + Math.exp(-2 * u));
  }
}

/**
 * dx = dy · d gelu(x) / dx. With s = 1 / (1 + exp(−2u)), gelu = x·s and
 * d gelu / dx = s + x · 2s(1 − s) · du/dx, where du/dx = C·(1 + 3·0.044715·x²).
 */
export function geluBackward(x: Float32Array, dy: Float32Array, dx: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const u = GELU_C * (v + GELU_CUBIC * v * v * v);
    const s = 1 / (1 + Math.exp(-2 * u));
    const du = GELU_C * (1 + 3 * GELU_CUBIC * v * v);
    dx[i] = dy[i] * (s + v * 2 * s * (1 - s) * du);
  }
}

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
  const lo = Math.min(axis1, axis2);
  const hi = Math.max(axis1, axis2);
  const size = (from: number, to: number) => shape.slice(from, to).reduce((p, d) => p * d, 1);
  const outer = size(0, lo);
  const d1 = shape[lo];
  const mid = size(lo + 1, hi);
  const d2 = shape[hi];
  const inner = size(hi + 1, shape.length);

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
