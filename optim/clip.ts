/** Global-norm gradient clipping that stays on the device: no readback inside a step. */

import { Tensor } from "../tensor/mod.ts";

/**
 * Returns the squared global gradient norm and the clipping coefficient
 * min(1, maxNorm / (norm + 1e-6)), both one-element tensors. Parameters without a gradient are
 * skipped; throws when no parameter has one.
 */
export function globalGradNorm(
  params: Iterable<Tensor>,
  maxNorm: number,
): { normSq: Tensor; coefficient: Tensor } {
  let normSq: Tensor | null = null;
  let backend = null;
  for (const p of params) {
    if (p.grad === null) continue;
    backend = p.backend;
    const partial = Tensor.fromStorage(backend, backend.sumSquares(p.grad.storage), [1]);
    if (normSq === null) normSq = partial;
    else {
      const total = Tensor.fromStorage(
        backend,
        backend.binary("add", normSq.storage, [1], partial.storage, [1], [1]),
        [1],
      );
      normSq.dispose();
      partial.dispose();
      normSq = total;
    }
  }
  if (normSq === null || backend === null) {
    throw new Error("gradient clipping: no parameter has a gradient; call backward() first");
  }
  const coefficient = Tensor.fromStorage(
    backend,
    backend.clipCoefficient(normSq.storage, maxNorm),
    [1],
  );
  return { normSq, coefficient };
}

/** Disposes and clears every gradient. */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}
