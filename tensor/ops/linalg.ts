/** Matrix products, batched over leading axes, with transposes folded into kernel flags. */

import type { MatmulSpec } from "../../kernels/backend.ts";
import { Tensor } from "../tensor.ts";
import { formatShape, ShapeError, sizeOf } from "../shape.ts";

export interface MatmulOptions {
  /** Use the transpose of a's last two axes. */
  transA?: boolean;
  /** Use the transpose of b's last two axes. */
  transB?: boolean;
}

/**
 * `a · b` over the last two axes. `a` is [..., m, k] and `b` is either [k, n] (shared by every
 * batch entry, as a weight is) or [..., k, n] with the same leading axes as `a`.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  if (a.rank < 2 || b.rank < 2) {
    throw new ShapeError(
      `matmul: both operands need rank ≥ 2, got ${formatShape(a.shape)} and ${
        formatShape(b.shape)
      }`,
    );
  }

  // A weight times activations with no transposed activations: fold the batch into rows.
  if (b.rank === 2 && a.rank > 2 && !transA) {
    const k = a.shape[a.rank - 1];
    const flat = matmul(a.reshape([-1, k]), b, options);
    return flat.reshape([...a.shape.slice(0, -1), flat.shape[1]]);
  }

  const batchShape = a.shape.slice(0, -2);
  const bBatched = b.rank > 2;
  if (bBatched && (b.rank !== a.rank || b.shape.slice(0, -2).some((d, i) => d !== batchShape[i]))) {
    throw new ShapeError(
      `matmul: batch axes differ: ${formatShape(a.shape)} and ${formatShape(b.shape)}`,
    );
  }
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const m = transA ? ac : ar;
  const k = transA ? ar : ac;
  const kb = transB ? bc : br;
  const n = transB ? br : bc;
  if (k !== kb) {
    throw new ShapeError(
      `matmul: inner sizes differ: ${formatShape(a.shape)}${transA ? "ᵀ" : ""} · ` +
        `${formatShape(b.shape)}${transB ? "ᵀ" : ""} (${k} vs ${kb})`,
    );
  }

  const batch = sizeOf(batchShape);
  const spec: MatmulSpec = { batch, m, n, k, transA, transB, aBatched: true, bBatched };
  const storage = a.backend.matmul(a.storage, b.storage, spec);

  return Tensor.fromOp(storage, [...batchShape, m, n], [a, b], "matmul", (dy) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (a.requiresGrad) {
      // d op(A) = dC · op(B)ᵀ; when A is stored transposed, dA = op(B) · dCᵀ.
      da = transA
        ? matmul(b, dy, { transA: transB, transB: true })
        : matmul(dy, b, { transB: !transB });
    }
    if (b.requiresGrad) {
      // d op(B) = op(A)ᵀ · dC; when B is stored transposed, dB = dCᵀ · op(A).
      const g = transB
        ? matmul(dy, a, { transA: true, transB: transA })
        : matmul(a, dy, { transA: !transA });
      db = bBatched ? g : sumLeading(g, b.shape);
    }
    return [da, db];
  });
}

/** Sums a batched gradient [..., r, c] over its leading axes, for an operand shared by the batch. */
function sumLeading(g: Tensor, shape: readonly number[]): Tensor {
  if (g.rank === 2) return g;
  const flat = g.reshape([-1, sizeOf(shape)]);
  const storage = g.backend.reduce("sum", flat.storage, 1, flat.shape[0], flat.shape[1]);
  return Tensor.fromStorage(g.backend, storage, shape);
}
