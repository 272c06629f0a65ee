/**
 * Fused neural-network ops: softmax, normalisations, embedding lookup, rotary positions and
 * softmax cross-entropy. Each calls one backend kernel forward and one backward.
 */

import { Tensor } from "../tensor.ts";
import { formatShape, ShapeError } from "../shape.ts";

function lastAxis(x: Tensor): { rows: number; cols: number } {
  const cols = x.shape[x.rank - 1];
  return { rows: x.size / cols, cols };
}

function checkVector(op: string, v: Tensor, cols: number, x: Tensor): void {
  if (v.size !== cols) {
    throw new ShapeError(
      `${op}: ${v.describe()} must have ${cols} elements to match ${formatShape(x.shape)}`,
    );
  }
}

/**
 * Softmax along the last axis. With `causal`, x is [..., T, T] attention scores and query t sees
 * keys 0..t only; a row whose keys are all masked is zero.
 */
export function softmax(x: Tensor, options: { causal?: boolean } = {}): Tensor {
  const { rows, cols } = lastAxis(x);
  const causalQueries = options.causal ? x.shape[x.rank - 2] : 0;
  if (options.causal && (x.rank < 2 || causalQueries > cols)) {
    throw new ShapeError(
      `softmax: a causal mask needs [..., T, S] with T ≤ S, got ${formatShape(x.shape)}`,
    );
  }
  const backend = x.backend;
  const y = backend.softmax(x.storage, rows, cols, causalQueries);
  const out: Tensor = Tensor.fromOp(y, x.shape, [x], "softmax", (dy) => [
    Tensor.fromStorage(
      backend,
      backend.softmaxBackward(out.storage, dy.storage, rows, cols),
      x.shape,
    ),
  ]);
  return out;
}

/** LayerNorm over the last axis with scale `gamma` and shift `beta`. */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: number): Tensor {
  const { rows, cols } = lastAxis(x);
  checkVector("layerNorm", gamma, cols, x);
  checkVector("layerNorm", beta, cols, x);
  const backend = x.backend;
  const { y, mean, rstd } = backend.layerNorm(
    x.storage,
    gamma.storage,
    beta.storage,
    rows,
    cols,
    eps,
  );
  const saved = [
    Tensor.fromStorage(backend, mean, [rows]),
    Tensor.fromStorage(backend, rstd, [rows]),
  ];
  return Tensor.fromOp(y, x.shape, [x, gamma, beta], "layerNorm", (dy) => {
    const g = backend.layerNormBackward(
      x.storage,
      gamma.storage,
      saved[0].storage,
      saved[1].storage,
      dy.storage,
      rows,
      cols,
    );
    return [
      Tensor.fromStorage(backend, g.dx, x.shape),
      Tensor.fromStorage(backend, g.dgamma, gamma.shape),
      Tensor.fromStorage(backend, g.dbeta, beta.shape),
    ];
  });
}

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) ⊙ gamma. */
export function rmsNorm(x: Tensor, gamma: Tensor, eps: number): Tensor {
  const { rows, cols } = lastAxis(x);
  checkVector("rmsNorm", gamma, cols, x);
  const backend = x.backend;
  const { y, rstd } = backend.rmsNorm(x.storage, gamma.storage, rows, cols, eps);
  const savedRstd = Tensor.fromStorage(backend, rstd, [rows]);
  return Tensor.fromOp(y, x.shape, [x, gamma], "rmsNorm", (dy) => {
    const g = backend.rmsNormBackward(
      x.storage,
      gamma.storage,
      savedRstd.storage,
      dy.storage,
      rows,
      cols,
    );
    return [
      Tensor.fromStorage(backend, g.dx, x.shape),
      Tensor.fromStorage(backend, g.dgamma, gamma.shape),
    ];
  });
}

/** Rows of `table` ([vocab, dim]) for each i32 id; returns [...ids.shape, dim]. */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  if (ids.dtype !== "i32") {
    throw new ShapeError(`embedding: ids must be i32, got ${ids.describe()}`);
  }
  if (table.rank !== 2) {
    throw new ShapeError(`embedding: table must be [vocab, dim], got ${table.describe()}`);
  }
  const [vocab, dim] = table.shape;
  const n = ids.size;
  const backend = table.backend;
  const out = backend.gather(table.storage, ids.storage, n, vocab, dim);
  return Tensor.fromOp(out, [...ids.shape, dim], [table], "embedding", (dy) => [
    Tensor.fromStorage(
      backend,
      backend.scatterAdd(dy.storage, ids.storage, n, vocab, dim),
      table.shape,
    ),
  ]);
}

/**
 * Rotary position embedding on x of shape [outer, T, dim] (any leading axes), pairing element i
 * with i + dim/2. `cos` and `sin` are [T, dim/2] tables.
 */
export function rope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const dim = x.shape[x.rank - 1];
  const seqLen = x.shape[x.rank - 2];
  if (dim % 2 !== 0) {
    throw new ShapeError(`rope: the last axis must be even, got ${formatShape(x.shape)}`);
  }
  if (cos.size !== seqLen * (dim / 2) || sin.size !== cos.size) {
    throw new ShapeError(
      `rope: tables ${formatShape(cos.shape)} do not match [${seqLen}, ${dim / 2}] for ${
        formatShape(x.shape)
      }`,
    );
  }
  const outer = x.size / (seqLen * dim);
  const backend = x.backend;
  const y = backend.rope(x.storage, cos.storage, sin.storage, outer, seqLen, dim, false);
  return Tensor.fromOp(y, x.shape, [x], "rope", (dy) => [
    Tensor.fromStorage(
      backend,
      backend.rope(dy.storage, cos.storage, sin.storage, outer, seqLen, dim, true),
      x.shape,
    ),
  ]);
}

/**
 * Mean softmax cross-entropy of logits [..., V] against i32 targets [...], skipping targets equal
 * to `ignoreIndex`. Returns a one-element tensor of shape [].
 */
export function crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex = -100): Tensor {
  const { rows, cols } = lastAxis(logits);
  if (targets.dtype !== "i32" || targets.size !== rows) {
    throw new ShapeError(
      `crossEntropy: targets ${targets.describe()} (${targets.dtype}) must be i32 with ${rows} ` +
        `elements for logits ${formatShape(logits.shape)}`,
    );
  }
  const backend = logits.backend;
  const { loss, lse, count } = backend.crossEntropy(
    logits.storage,
    targets.storage,
    rows,
    cols,
    ignoreIndex,
  );
  const saved = [Tensor.fromStorage(backend, lse, [rows]), Tensor.fromStorage(backend, count, [1])];
  return Tensor.fromOp(loss, [], [logits], "crossEntropy", (dy) => [
    Tensor.fromStorage(
      backend,
      backend.crossEntropyBackward(
        logits.storage,
        targets.storage,
        saved[0].storage,
        saved[1].storage,
        dy.storage,
        rows,
        cols,
        ignoreIndex,
      ),
      logits.shape,
    ),
  ]);
}
