/**
 * Fused causal attention as a differentiable op, plus the forward-only helpers that probes and
 * dynamic mask attention use: materialised probabilities and top-w key selection.
 *
 * The fused op stores no T×T matrix: the backend keeps a running maximum and sum per query and
 * saves the log-sum-exp, and backward recomputes the probabilities from it.
 */

import type { AttentionInputs, AttentionSpec } from "../../kernels/backend.ts";
import { Tensor } from "../tensor.ts";
import { formatShape, ShapeError } from "../shape.ts";
import { add } from "./elementwise.ts";

export interface FusedAttentionOptions {
  /** Factor on q·k; defaults to 1/√headDim. */
  scale?: number;
  /** Sliding window in keys (query i attends to keys i − window < j ≤ i); 0 or absent: none. */
  window?: number;
  /** i32 [H]: a window per head (0 means none), in place of `window`. */
  windows?: Tensor;
  /** Keys before this position stay visible to every later query, whatever the window. */
  initialKeys?: number;
  /** Additive logits: [B, kvHeads, T] (one per key) or [B, H, T, T]. Differentiable. */
  bias?: Tensor;
  /** f32 [H]: ALiBi slopes; the logit of (i, j) gains −slope·(i − j). Not differentiated. */
  alibiSlopes?: Tensor;
  /** f32 [B, T] of 0 and 1: keys marked 0 are hidden. */
  keyMask?: Tensor;
  /** i32 [B, kvHeads, T]: key j is visible only to queries i < keyEnds (see `attentionKeepEnds`). */
  keyEnds?: Tensor;
  /** Sink logit of a virtual zero-value key: [H] per head or [B, H, T] per query. Differentiable. */
  sink?: Tensor;
}

interface Resolved {
  spec: AttentionSpec;
  inputs: AttentionInputs;
  /** The sink broadcast to [B, H, T], or null. */
  sink: Tensor | null;
}

function resolve(
  op: string,
  q: Tensor,
  k: Tensor,
  v: Tensor | null,
  options: FusedAttentionOptions,
): Resolved {
  if (q.rank !== 4 || k.rank !== 4) {
    throw new ShapeError(
      `${op}: q and k must be [batch, heads, seqLen, headDim], got ${formatShape(q.shape)} and ` +
        formatShape(k.shape),
    );
  }
  const [batch, heads, seqLen, headDim] = q.shape;
  const kvHeads = k.shape[1];
  const valueDim = v === null ? 1 : v.shape[3];
  const kvShape = [batch, kvHeads, seqLen];
  if (k.shape[0] !== batch || k.shape[2] !== seqLen || k.shape[3] !== headDim) {
    throw new ShapeError(
      `${op}: k ${formatShape(k.shape)} does not match q ${formatShape(q.shape)}; ` +
        `expected [${batch}, kvHeads, ${seqLen}, ${headDim}]`,
    );
  }
  if (kvHeads === 0 || heads % kvHeads !== 0) {
    throw new ShapeError(`${op}: k has ${kvHeads} heads, which does not divide q's ${heads}`);
  }
  if (v !== null && (v.rank !== 4 || v.shape.slice(0, 3).some((d, i) => d !== kvShape[i]))) {
    throw new ShapeError(
      `${op}: v ${formatShape(v.shape)} must be [${kvShape.join(", ")}, valueDim] to match k`,
    );
  }

  const window = options.window ?? 0;
  if (!Number.isInteger(window) || window < 0) {
    throw new ShapeError(`${op}: window is ${window} but must be a non-negative integer`);
  }
  const bias = options.bias ?? null;
  let biasKind: AttentionSpec["biasKind"] = "none";
  if (bias !== null) {
    if (sameShape(bias.shape, kvShape)) biasKind = "keys";
    else if (sameShape(bias.shape, [batch, heads, seqLen, seqLen])) biasKind = "full";
    else {
      throw new ShapeError(
        `${op}: bias ${formatShape(bias.shape)} must be [${kvShape.join(", ")}] (per key) or ` +
          `[${batch}, ${heads}, ${seqLen}, ${seqLen}]`,
      );
    }
  }

  let sink: Tensor | null = null;
  if (options.sink) {
    const s = options.sink;
    if (sameShape(s.shape, [heads])) {
      sink = add(Tensor.zeros(q.backend, [batch, heads, seqLen]), s.reshape([heads, 1]));
    } else if (sameShape(s.shape, [batch, heads, seqLen])) sink = s;
    else {
      throw new ShapeError(
        `${op}: sink ${formatShape(s.shape)} must be [${heads}] or [${batch}, ${heads}, ${seqLen}]`,
      );
    }
  }

  const spec: AttentionSpec = {
    batch,
    heads,
    kvHeads,
    seqLen,
    headDim,
    valueDim,
    scale: options.scale ?? 1 / Math.sqrt(headDim),
    window,
    initialKeys: options.initialKeys ?? 0,
    biasKind,
  };
  const inputs: AttentionInputs = {
    q: q.storage,
    k: k.storage,
    v: v === null ? k.storage : v.storage,
    bias: bias?.storage ?? null,
    alibiSlopes: options.alibiSlopes?.storage ?? null,
    windows: options.windows?.storage ?? null,
    keyMask: options.keyMask?.storage ?? null,
    keyEnds: options.keyEnds?.storage ?? null,
    sink: sink?.storage ?? null,
  };
  return { spec, inputs, sink };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Fused causal attention: softmax(q·kᵀ·scale + bias + masks) · v per head, returning
 * [B, H, T, valueDim]. q is [B, H, T, headDim]; k and v have kvHeads heads (grouped-query
 * attention when kvHeads < H). A query with no visible key and no sink gets zeros and zero
 * gradients. Gradients reach q, k, v, `bias` and `sink`.
 */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FusedAttentionOptions = {},
): Tensor {
  const { spec, inputs, sink } = resolve("attention", q, k, v, options);
  const backend = q.backend;
  const { out, lse } = backend.attention(inputs, spec);
  const savedLse = Tensor.fromStorage(backend, lse, [spec.batch, spec.heads, spec.seqLen]);

  const bias = options.bias ?? null;
  const differentiable = [q, k, v, ...(bias ? [bias] : []), ...(sink ? [sink] : [])];
  const shape = [spec.batch, spec.heads, spec.seqLen, spec.valueDim];
  const result: Tensor = Tensor.fromOp(out, shape, differentiable, "attention", (dy) => {
    const g = backend.attentionBackward(
      inputs,
      result.storage,
      savedLse.storage,
      dy.storage,
      spec,
    );
    const grads: (Tensor | null)[] = [
      Tensor.fromStorage(backend, g.dq, q.shape),
      Tensor.fromStorage(backend, g.dk, k.shape),
      Tensor.fromStorage(backend, g.dv, v.shape),
    ];
    if (bias) grads.push(Tensor.fromStorage(backend, g.dbias!, bias.shape));
    if (sink) grads.push(Tensor.fromStorage(backend, g.dsink!, sink.shape));
    return grads;
  });
  return result;
}

/**
 * Computes the probabilities of `attention` with the same options, as [B, H, T, T]: 0 on hidden keys, rows
 * summing to 1 minus the sink's share. Forward only, for probes and routers: no gradient flows.
 */
export function attentionProbs(q: Tensor, k: Tensor, options: FusedAttentionOptions = {}): Tensor {
  const { spec, inputs } = resolve("attentionProbs", q, k, null, options);
  const probs = q.backend.attentionProbs(inputs, spec);
  return Tensor.fromStorage(q.backend, probs, [spec.batch, spec.heads, spec.seqLen, spec.seqLen]);
}

/**
 * Top-w key selection of dynamic mask attention: for scores [..., T], returns i32 ends of the same
 * shape such that query i keeps key j ≤ i exactly when i < ends[j]. Each query then keeps its
 * `keep` highest-scoring keys among 0..i (all of them when i < keep), ties going to the later key.
 * Selection only: no gradient flows through it.
 */
export function attentionKeepEnds(scores: Tensor, keep: number): Tensor {
  if (!Number.isInteger(keep) || keep < 1) {
    throw new ShapeError(`attentionKeepEnds: keep is ${keep} but must be a positive integer`);
  }
  const seqLen = scores.shape[scores.rank - 1];
  const rows = scores.size / seqLen;
  const ends = scores.backend.attentionKeepEnds(scores.storage, rows, seqLen, keep);
  return Tensor.fromStorage(scores.backend, ends, scores.shape, "i32");
}
