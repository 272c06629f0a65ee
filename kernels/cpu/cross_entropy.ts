/** Softmax cross-entropy of logits against integer targets, with an ignored target id. */

import type { Storage } from "../backend.ts";
import { checkCount, type CpuMemory } from "./storage.ts";

function checkTarget(op: string, target: number, row: number, cols: number, ignore: number): void {
  if (target === ignore) return;
  if (target < 0 || target >= cols) {
    throw new Error(
      `${op}: target ${target} of row ${row} is out of range for ${cols} classes ` +
        `and is not ignoreIndex ${ignore}`,
    );
  }
}

/**
 * Returns the mean loss over counted rows, the log-sum-exp of every row (ignored rows included)
 * and the count of counted rows as a one-element float storage.
 */
export function crossEntropy(
  mem: CpuMemory,
  logits: Storage,
  targets: Storage,
  rows: number,
  cols: number,
  ignoreIndex: number,
): { loss: Storage; lse: Storage; count: Storage } {
  const op = "crossEntropy";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  const xd = mem.floats(op, "logits", logits, rows * cols);
  const td = mem.ints(op, "targets", targets, rows);

  const lse = mem.allocFloat(rows);
  let lossSum = 0;
  let counted = 0;
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    checkTarget(op, td[r], r, cols, ignoreIndex);

    // Subtracting the row max keeps exp ≤ 1, so logits like [1000, 0] do not overflow.
    let max = -Infinity;
    for (let c = 0; c < cols; c++) max = Math.max(max, xd[start + c]);
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += Math.exp(xd[start + c] - max);
    const rowLse = max + Math.log(sum);
    lse.data[r] = rowLse;

    if (td[r] === ignoreIndex) continue;
    lossSum += rowLse - xd[start + td[r]];
    counted++;
  }

  const loss = mem.allocFloat(1);
  loss.data[0] = counted > 0 ? lossSum / counted : 0;
  const count = mem.allocFloat(1);
  count.data[0] = counted;
  return { loss, lse, count };
}

/** dlogits = (softmax − onehot) · dy / max(count, 1) on counted rows and 0 on ignored ones. */
export function crossEntropyBackward(
  mem: CpuMemory,
  logits: Storage,
  targets: Storage,
  lse: Storage,
  count: Storage,
  dy: Storage,
  rows: number,
  cols: number,
  ignoreIndex: number,
): Storage {
  const op = "crossEntropyBackward";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  const xd = mem.floats(op, "logits", logits, rows * cols);
  const td = mem.ints(op, "targets", targets, rows);
  const lsed = mem.floats(op, "lse", lse, rows);
  const countd = mem.floats(op, "count", count, 1);
  const dyd = mem.floats(op, "dy", dy, 1);

  const out = mem.allocFloat(rows * cols);
  const dxd = out.data;
  const scale = dyd[0] / Math.max(countd[0], 1);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    checkTarget(op, td[r], r, cols, ignoreIndex);
    if (td[r] === ignoreIndex) {
      dxd.fill(0, start, start + cols);
      continue;
    }

    for (let c = 0; c < cols; c++) {
      const p = Math.exp(xd[start + c] - lsed[r]);
      dxd[start + c] = (c === td[r] ? p - 1 : p) * scale;
    }
  }
  return out;
}
