/**
 * Mixture-of-experts primitives on the CPU: top-k selection, column and row gathers with their
 * scatter-add gradients, capacity dropping, the counting sort of assignments by expert, and the
 * grouped matrix products that run every expert on its contiguous block of rows.
 *
 * Each op follows the contract documented on `Backend` and visits elements in the order the
 * WebGPU kernels do, so both backends select, drop and sum identically.
 */

import type { Storage } from "../backend.ts";
import { checkCount, type CpuMemory, type FloatArray } from "./storage.ts";

function checkTopK(op: string, k: number, cols: number): void {
  if (k > cols) {
    throw new Error(`${op}: k is ${k} but rows have only ${cols} columns; choose k <= ${cols}`);
  }
}

function checkIndices(op: string, name: string, index: Int32Array, limit: number): void {
  for (let i = 0; i < index.length; i++) {
    if (index[i] >= limit) {
      throw new Error(
        `${op}: ${name} ${index[i]} at position ${i} is out of range; indices must be < ${limit} ` +
          `(negative indices mark empty entries)`,
      );
    }
  }
}

export function topK(
  mem: CpuMemory,
  scores: Storage,
  rows: number,
  cols: number,
  k: number,
): { indices: Storage; values: Storage } {
  const op = "topK";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  checkCount(op, "k", k);
  checkTopK(op, k, cols);
  const sd = mem.floats(op, "scores", scores, rows * cols);

  const indices = mem.allocInt(rows * k);
  const values = mem.allocFloat(rows * k);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    // Pass j picks the largest score ranked after the previous pick in the order
    // (score descending, column ascending), so equal scores come out lowest column first.
    let previous = -1;
    let previousScore = 0;
    for (let j = 0; j < k; j++) {
      let best = -1;
      let bestScore = 0;
      for (let c = 0; c < cols; c++) {
        const s = sd[base + c];
        const eligible = previous < 0 || s < previousScore || (s === previousScore && c > previous);
        if (eligible && (best < 0 || s > bestScore)) {
          best = c;
          bestScore = s;
        }
      }
      if (best < 0) {
        // Only NaN scores are left: this pick and every later one is empty.
        indices.data.fill(-1, r * k + j, (r + 1) * k);
        values.data.fill(NaN, r * k + j, (r + 1) * k);
        break;
      }
      indices.data[r * k + j] = best;
      values.data[r * k + j] = bestScore;
      previous = best;
      previousScore = bestScore;
    }
  }
  return { indices, values };
}

export function gatherColumns(
  mem: CpuMemory,
  x: Storage,
  indices: Storage,
  rows: number,
  cols: number,
  k: number,
): Storage {
  const op = "gatherColumns";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  checkCount(op, "k", k);
  const xd = mem.anyDtype(op, "x", x, rows * cols);
  const id = mem.ints(op, "indices", indices, rows * k);
  checkIndices(op, "index", id, cols);

  const out = mem.alloc(rows * k, x.dtype);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < k; j++) {
      const c = id[r * k + j];
      out.data[r * k + j] = c < 0 ? 0 : xd[r * cols + c];
    }
  }
  return out;
}

export function scatterColumns(
  mem: CpuMemory,
  dy: Storage,
  indices: Storage,
  rows: number,
  cols: number,
  k: number,
): Storage {
  const op = "scatterColumns";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  checkCount(op, "k", k);
  const dyd = mem.floats(op, "dy", dy, rows * k);
  const id = mem.ints(op, "indices", indices, rows * k);
  checkIndices(op, "index", id, cols);

  const sums = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < k; j++) {
      const c = id[r * k + j];
      if (c >= 0) sums[r * cols + c] += dyd[r * k + j];
    }
  }
  const out = mem.allocFloat(rows * cols);
  out.data.set(sums);
  return out;
}

export function gatherRows(
  mem: CpuMemory,
  x: Storage,
  index: Storage,
  n: number,
  m: number,
  cols: number,
): Storage {
  const op = "gatherRows";
  checkCount(op, "n", n);
  checkCount(op, "m", m);
  checkCount(op, "cols", cols);
  const xd = mem.anyDtype(op, "x", x, n * cols);
  const id = mem.ints(op, "index", index, m);
  checkIndices(op, "index", id, n);

  const out = mem.alloc(m * cols, x.dtype);
  for (let i = 0; i < m; i++) {
    const row = id[i];
    if (row < 0) out.data.fill(0, i * cols, (i + 1) * cols);
    else out.data.set(xd.subarray(row * cols, (row + 1) * cols), i * cols);
  }
  return out;
}

export function scatterAddRows(
  mem: CpuMemory,
  dy: Storage,
  index: Storage,
  m: number,
  n: number,
  cols: number,
): Storage {
  const op = "scatterAddRows";
  checkCount(op, "m", m);
  checkCount(op, "n", n);
  checkCount(op, "cols", cols);
  const dyd = mem.floats(op, "dy", dy, m * cols);
  const id = mem.ints(op, "index", index, m);
  checkIndices(op, "index", id, n);

  const sums = new Float64Array(n * cols);
  for (let i = 0; i < m; i++) {
    const row = id[i];
    if (row < 0) continue;
    for (let c = 0; c < cols; c++) sums[row * cols + c] += dyd[i * cols + c];
  }
  const out = mem.allocFloat(n * cols);
  out.data.set(sums);
  return out;
}

export function dropOverCapacity(
  mem: CpuMemory,
  experts: Storage,
  priority: Storage | null,
  count: number,
  numExperts: number,
  capacity: number,
): Storage {
  const op = "dropOverCapacity";
  checkCount(op, "count", count);
  checkCount(op, "numExperts", numExperts);
  checkCount(op, "capacity", capacity);
  const ed = mem.ints(op, "experts", experts, count);
  const pd = priority === null ? null : mem.floats(op, "priority", priority, count);

  const out = mem.allocInt(count);
  for (let a = 0; a < count; a++) {
    const e = ed[a];
    if (e < 0 || e >= numExperts) {
      out.data[a] = -1;
      continue;
    }
    // Rank among the assignments to the same expert: higher priority first, then position.
    let rank = 0;
    for (let b = 0; b < count; b++) {
      if (b === a || ed[b] !== e) continue;
      const ahead = pd === null ? b < a : pd[b] > pd[a] || (pd[b] === pd[a] && b < a);
      if (ahead) rank++;
    }
    out.data[a] = rank < capacity ? e : -1;
  }
  return out;
}

export function sortByExpert(
  mem: CpuMemory,
  experts: Storage,
  count: number,
  numExperts: number,
): { order: Storage; positions: Storage; offsets: Storage } {
  const op = "sortByExpert";
  checkCount(op, "count", count);
  checkCount(op, "numExperts", numExperts);
  const ed = mem.ints(op, "experts", experts, count);

  const offsets = mem.allocInt(numExperts + 1);
  offsets.data.fill(0);
  for (let a = 0; a < count; a++) {
    const e = ed[a];
    if (e >= 0 && e < numExperts) offsets.data[e + 1]++;
  }
  for (let e = 0; e < numExperts; e++) offsets.data[e + 1] += offsets.data[e];

  const order = mem.allocInt(count);
  const positions = mem.allocInt(count);
  order.data.fill(-1);
  const next = offsets.data.slice(0, numExperts);
  for (let a = 0; a < count; a++) {
    const e = ed[a];
    if (e < 0 || e >= numExperts) {
      positions.data[a] = -1;
      continue;
    }
    const row = next[e]++;
    order.data[row] = a;
    positions.data[a] = row;
  }
  return { order, positions, offsets };
}

/** Reads and checks group offsets: non-decreasing from 0 up to at most `rows`. */
function groupOffsets(
  mem: CpuMemory,
  op: string,
  offsets: Storage,
  numExperts: number,
  rows: number,
): Int32Array {
  const od = mem.ints(op, "offsets", offsets, numExperts + 1);
  let valid = od[0] === 0 && od[numExperts] <= rows;
  for (let e = 0; e < numExperts; e++) valid &&= od[e] <= od[e + 1];
  if (!valid) {
    throw new Error(
      `${op}: offsets [${Array.from(od).join(", ")}] are invalid; they must rise from 0 to at ` +
        `most the ${rows} rows`,
    );
  }
  return od;
}

export function groupedMatmul(
  mem: CpuMemory,
  x: Storage,
  w: Storage,
  offsets: Storage,
  rows: number,
  numExperts: number,
  dIn: number,
  dOut: number,
): Storage {
  const op = "groupedMatmul";
  for (const [name, value] of Object.entries({ rows, numExperts, dIn, dOut })) {
    checkCount(op, name, value);
  }
  const xd = mem.floats(op, "x", x, rows * dIn);
  const wd = mem.floats(op, "w", w, numExperts * dOut * dIn);
  const od = groupOffsets(mem, op, offsets, numExperts, rows);

  const out = mem.allocFloat(rows * dOut);
  out.data.fill(0);
  const acc = new Float64Array(dOut);
  for (let e = 0; e < numExperts; e++) {
    const wBase = e * dOut * dIn;
    for (let r = od[e]; r < od[e + 1]; r++) {
      for (let o = 0; o < dOut; o++) {
        let sum = 0;
        for (let i = 0; i < dIn; i++) sum += xd[r * dIn + i] * wd[wBase + o * dIn + i];
        acc[o] = sum;
      }
      out.data.set(acc, r * dOut);
    }
  }
  return out;
}

export function groupedMatmulWeightGrad(
  mem: CpuMemory,
  dy: Storage,
  x: Storage,
  offsets: Storage,
  rows: number,
  numExperts: number,
  dIn: number,
  dOut: number,
): Storage {
  const op = "groupedMatmulWeightGrad";
  for (const [name, value] of Object.entries({ rows, numExperts, dIn, dOut })) {
    checkCount(op, name, value);
  }
  const dyd = mem.floats(op, "dy", dy, rows * dOut);
  const xd = mem.floats(op, "x", x, rows * dIn);
  const od = groupOffsets(mem, op, offsets, numExperts, rows);

  const out = mem.allocFloat(numExperts * dOut * dIn);
  const sums = new Float64Array(dOut * dIn);
  for (let e = 0; e < numExperts; e++) {
    sums.fill(0);
    for (let r = od[e]; r < od[e + 1]; r++) {
      for (let o = 0; o < dOut; o++) {
        const g = dyd[r * dOut + o];
        for (let i = 0; i < dIn; i++) sums[o * dIn + i] += g * xd[r * dIn + i];
      }
    }
    (out.data as FloatArray).set(sums, e * dOut * dIn);
  }
  return out;
}
