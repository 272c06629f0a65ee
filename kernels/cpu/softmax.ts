/** Row softmax with an optional causal mask, and its backward. */

import type { Storage } from "../backend.ts";
import { checkCount, type CpuMemory } from "./storage.ts";

/**
 * Number of leading columns that row `r` may attend to. With T = causalQueries > 0, query
 * q = r mod T attends to keys 0 … q + (cols − T), so the last query of a block attends to every
 * column. A result ≤ 0 means the row is fully masked.
 */
function visibleColumns(r: number, cols: number, causalQueries: number): number {
  if (causalQueries === 0) return cols;
  const visible = (r % causalQueries) + (cols - causalQueries) + 1;
  return Math.min(cols, visible);
}

export function softmax(
  mem: CpuMemory,
  x: Storage,
  rows: number,
  cols: number,
  causalQueries: number,
): Storage {
  const op = "softmax";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  checkCount(op, "causalQueries", causalQueries);
  if (causalQueries > 0 && rows % causalQueries !== 0) {
    throw new Error(
      `${op}: rows is ${rows}, not a multiple of causalQueries ${causalQueries}; ` +
        "causal rows must come in whole blocks of queries",
    );
  }
  const xd = mem.floats(op, "x", x, rows * cols);

  const out = mem.allocFloat(rows * cols);
  const yd = out.data;
  const exps = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    const visible = visibleColumns(r, cols, causalQueries);
    yd.fill(0, start + Math.max(visible, 0), start + cols);
    if (visible <= 0) continue;

    let max = -Infinity;
    for (let c = 0; c < visible; c++) max = Math.max(max, xd[start + c]);

    let sum = 0;
    for (let c = 0; c < visible; c++) {
      exps[c] = Math.exp(xd[start + c] - max);
      sum += exps[c];
    }
    for (let c = 0; c < visible; c++) yd[start + c] = exps[c] / sum;
  }
  return out;
}

export function softmaxBackward(
  mem: CpuMemory,
  y: Storage,
  dy: Storage,
  rows: number,
  cols: number,
): Storage {
  const op = "softmaxBackward";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  const yd = mem.floats(op, "y", y, rows * cols);
  const dyd = mem.floats(op, "dy", dy, rows * cols);

  const out = mem.allocFloat(rows * cols);
  const dxd = out.data;
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    let dot = 0;
    for (let c = 0; c < cols; c++) dot += dyd[start + c] * yd[start + c];
    for (let c = 0; c < cols; c++) {
      dxd[start + c] = yd[start + c] * (dyd[start + c] - dot);
    }
  }
  return out;
}
