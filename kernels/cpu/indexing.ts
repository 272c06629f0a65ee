/** Row gather by integer ids (embedding lookup) and its gradient, scatter-add. */

import type { Storage } from "../backend.ts";
import { checkCount, type CpuMemory } from "./storage.ts";

function checkIds(op: string, ids: Int32Array, vocab: number): void {
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      throw new Error(
        `${op}: id ${ids[i]} at position ${i} is out of range for vocab ${vocab}; ` +
          `ids must lie in [0, ${vocab})`,
      );
    }
  }
}

function checkIndexSizes(op: string, n: number, vocab: number, dim: number): void {
  checkCount(op, "n", n);
  checkCount(op, "vocab", vocab);
  checkCount(op, "dim", dim);
}

export function gather(
  mem: CpuMemory,
  table: Storage,
  ids: Storage,
  n: number,
  vocab: number,
  dim: number,
): Storage {
  const op = "gather";
  checkIndexSizes(op, n, vocab, dim);
  const td = mem.floats(op, "table", table, vocab * dim);
  const idd = mem.ints(op, "ids", ids, n);
  checkIds(op, idd, vocab);

  const out = mem.allocFloat(n * dim);
  for (let i = 0; i < n; i++) {
    const row = idd[i] * dim;
    out.data.set(td.subarray(row, row + dim), i * dim);
  }
  return out;
}

/** Adds each row of dy into the row of its id, in ascending position order for reproducible sums. */
export function scatterAdd(
  mem: CpuMemory,
  dy: Storage,
  ids: Storage,
  n: number,
  vocab: number,
  dim: number,
): Storage {
  const op = "scatterAdd";
  checkIndexSizes(op, n, vocab, dim);
  const dyd = mem.floats(op, "dy", dy, n * dim);
  const idd = mem.ints(op, "ids", ids, n);
  checkIds(op, idd, vocab);

  const sums = new Float64Array(vocab * dim);
  for (let i = 0; i < n; i++) {
    const row = idd[i] * dim;
    for (let c = 0; c < dim; c++) sums[row + c] += dyd[i * dim + c];
  }

  const out = mem.allocFloat(vocab * dim);
  out.data.set(sums);
  return out;
}
