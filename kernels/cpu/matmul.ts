/** Batched matrix product with optional transposes and broadcast (unbatched) operands. */

import type { MatmulSpec, Storage } from "../backend.ts";
import { checkCount, type CpuMemory } from "./storage.ts";

export function matmul(mem: CpuMemory, a: Storage, b: Storage, spec: MatmulSpec): Storage {
  const op = "matmul";
  const { batch, m, n, k, transA, transB, aBatched, bBatched } = spec;
  checkCount(op, "batch", batch);
  checkCount(op, "m", m);
  checkCount(op, "n", n);
  checkCount(op, "k", k);
  const ad = mem.floats(op, "a", a, (aBatched ? batch : 1) * m * k);
  const bd = mem.floats(op, "b", b, (bBatched ? batch : 1) * k * n);

  // A(i, p) is at aOffset + i·aRowStride + p·aColStride, and likewise B(p, j).
  const aRowStride = transA ? 1 : k;
  const aColStride = transA ? m : 1;
  const bRowStride = transB ? 1 : n;
  const bColStride = transB ? k : 1;

  const out = mem.allocFloat(batch * m * n);
  const cd = out.data;
  // Each C(i, j) accumulates its k products in float64, in order p = 0, 1, ..., k − 1.
  const row = new Float64Array(n);
  for (let bi = 0; bi < batch; bi++) {
    const aOffset = aBatched ? bi * m * k : 0;
    const bOffset = bBatched ? bi * k * n : 0;
    const cOffset = bi * m * n;

    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let p = 0; p < k; p++) {
        const aip = ad[aOffset + i * aRowStride + p * aColStride];
        const bRow = bOffset + p * bRowStride;
        for (let j = 0; j < n; j++) row[j] += aip * bd[bRow + j * bColStride];
      }
      cd.set(row, cOffset + i * n);
    }
  }
  return out;
}
