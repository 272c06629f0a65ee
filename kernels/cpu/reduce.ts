/** Sum and max along the middle axis of [outer, n, inner], and the gradient of max. */

import type { ReduceOp, Storage } from "../backend.ts";
import { checkCount, type CpuMemory, type FloatArray } from "./storage.ts";

function checkReduceSizes(op: string, outer: number, n: number, inner: number): void {
  checkCount(op, "outer", outer);
  checkCount(op, "n", n);
  checkCount(op, "inner", inner);
}

/**
 * Index of the first maximal element of the slice starting at `start` with `n` elements spaced
 * `stride` apart. A NaN counts as maximal, so max propagates NaN.
 */
function argmaxSlice(xd: FloatArray, start: number, n: number, stride: number): number {
  let best = start;
  for (let j = 1; j < n; j++) {
    const index = start + j * stride;
    if (Number.isNaN(xd[best])) break;
    if (xd[index] > xd[best] || Number.isNaN(xd[index])) best = index;
  }
  return best;
}

export function reduce(
  mem: CpuMemory,
  op: ReduceOp,
  x: Storage,
  outer: number,
  n: number,
  inner: number,
): Storage {
  const name = `reduce ${op}`;
  checkReduceSizes(name, outer, n, inner);
  if (op !== "sum" && op !== "max") {
    throw new Error(`reduce: op ${String(op)} is not supported; use sum or max`);
  }
  if (op === "max" && n === 0) {
    throw new Error(`${name}: n is 0, and the max of an empty axis is undefined`);
  }
  const xd = mem.floats(name, "x", x, outer * n * inner);

  const out = mem.allocFloat(outer * inner);
  const yd = out.data;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const start = o * n * inner + i;
      if (op === "max") {
        yd[o * inner + i] = xd[argmaxSlice(xd, start, n, inner)];
        continue;
      }

      let sum = 0;
      for (let j = 0; j < n; j++) sum += xd[start + j * inner];
      yd[o * inner + i] = sum;
    }
  }
  return out;
}

export function maxBackward(
  mem: CpuMemory,
  x: Storage,
  dy: Storage,
  outer: number,
  n: number,
  inner: number,
): Storage {
  const op = "maxBackward";
  checkReduceSizes(op, outer, n, inner);
  const xd = mem.floats(op, "x", x, outer * n * inner);
  const dyd = mem.floats(op, "dy", dy, outer * inner);

  const out = mem.allocFloat(xd.length);
  const dxd = out.data;
  dxd.fill(0);
  if (n === 0) return out;

  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const start = o * n * inner + i;
      dxd[argmaxSlice(xd, start, n, inner)] = dyd[o * inner + i];
    }
  }
  return out;
}
