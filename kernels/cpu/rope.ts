/** Rotary position embedding with the rotate-half pairing (i, i + dim/2). */

import type { Storage } from "../backend.ts";
import { checkCount, type CpuMemory } from "./storage.ts";

/**
 * Rotates each pair (x1, x2) = (x[i], x[i + dim/2]) by the angle θ of its position and frequency:
 * y1 = x1·cos θ − x2·sin θ and y2 = x1·sin θ + x2·cos θ. `inverse` rotates by −θ, which is the
 * backward pass because the rotation is orthogonal.
 */
export function rope(
  mem: CpuMemory,
  x: Storage,
  cos: Storage,
  sin: Storage,
  outer: number,
  seqLen: number,
  dim: number,
  inverse: boolean,
): Storage {
  const op = "rope";
  checkCount(op, "outer", outer);
  checkCount(op, "seqLen", seqLen);
  checkCount(op, "dim", dim);
  if (dim % 2 !== 0) {
    throw new Error(`${op}: dim is ${dim} but must be even to pair i with i + dim/2`);
  }
  const half = dim / 2;
  const xd = mem.floats(op, "x", x, outer * seqLen * dim);
  const cd = mem.floats(op, "cos", cos, seqLen * half);
  const sd = mem.floats(op, "sin", sin, seqLen * half);

  const out = mem.allocFloat(xd.length);
  const yd = out.data;
  const sign = inverse ? -1 : 1;
  for (let o = 0; o < outer; o++) {
    for (let s = 0; s < seqLen; s++) {
      const start = (o * seqLen + s) * dim;
      for (let i = 0; i < half; i++) {
        const c = cd[s * half + i];
        const sn = sign * sd[s * half + i];
        const x1 = xd[start + i];
        const x2 = xd[start + half + i];
        yd[start + i] = x1 * c - x2 * sn;
        yd[start + half + i] = x1 * sn + x2 * c;
      }
    }
  }
  return out;
}
