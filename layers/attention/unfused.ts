/**
 * Unfused attention, causal by default, from ordinary tensor ops: the T×T scores, masks added as
 * large negative logits, a row softmax and a product with the values.
 *
 * It is the reference that tests compare the fused op against, the path that returns
 * differentiable probabilities, and the only path for non-causal attention. Masks are built on the host, so their inputs are host arrays.
 */

import {
  add,
  concat,
  matmul,
  mul,
  scale,
  slice,
  softmax,
  type Tensor,
  Tensor as TensorClass,
} from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";

/** The logit given to hidden keys; finite, so a fully hidden row never produces NaN. */
export const MASKED_LOGIT = -1e30;

export interface UnfusedAttentionOptions {
  scale?: number;
  /**
   * False lets every query see every key; windows and ALiBi then count the distance |i − j| both
   * ways. Default true, where query i sees keys j ≤ i.
   */
  causal?: boolean;
  window?: number;
  /** A window per head (0 means none). */
  windows?: readonly number[];
  initialKeys?: number;
  /** [B, kvHeads, T] or [B, H, T, T], as for the fused op. */
  bias?: Tensor;
  alibiSlopes?: readonly number[];
  /** [B·T] of 0 and 1. */
  keyMask?: ArrayLike<number>;
  /** [B·kvHeads·T]: key j is visible only to queries i < keyEnds. */
  keyEnds?: ArrayLike<number>;
  /** [H] or [B, H, T]. */
  sink?: Tensor;
}

/**
 * Attention with the same semantics as the fused `attention` op, returning the output
 * [B, H, T, valueDim] and the probabilities [B, H, T, T] (the sink's share excluded).
 */
export function unfusedAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: UnfusedAttentionOptions = {},
): { output: Tensor; probs: Tensor } {
  const [batch, heads, seqLen, headDim] = q.shape;
  const kvHeads = k.shape[1];
  if (heads % kvHeads !== 0) {
    throw new ShapeError(`unfusedAttention: k has ${kvHeads} heads, not dividing ${heads}`);
  }
  const group = heads / kvHeads;
  const backend = q.backend;

  const kFull = repeatHeads(k, group);
  const vFull = repeatHeads(v, group);
  let scores = scale(matmul(q, kFull, { transB: true }), options.scale ?? 1 / Math.sqrt(headDim));

  if (options.bias) {
    const b = options.bias;
    if (b.rank === 3) {
      const grouped = scores.reshape([batch, kvHeads, group, seqLen, seqLen]);
      scores = add(grouped, b.reshape([batch, kvHeads, 1, 1, seqLen])).reshape(scores.shape);
    } else {
      scores = add(scores, b);
    }
  }

  const { additive, keep } = hostMasks(batch, heads, kvHeads, seqLen, options);
  scores = add(scores, TensorClass.fromArray(backend, additive, scores.shape));
  const keepTensor = TensorClass.fromArray(backend, keep, scores.shape);

  let probs: Tensor;
  if (options.sink) {
    let sink = options.sink;
    if (sink.rank === 1) {
      sink = add(TensorClass.zeros(backend, [batch, heads, seqLen]), sink.reshape([heads, 1]));
    }
    const withSink = concat([sink.reshape([batch, heads, seqLen, 1]), scores], 3);
    probs = slice(softmax(withSink), 3, 1, seqLen + 1);
  } else {
    probs = softmax(scores);
  }
  // A fully hidden row has uniform weights over its masked logits; the keep mask zeroes it.
  probs = mul(probs, keepTensor);
  return { output: matmul(probs, vFull), probs };
}

/** [B, Hkv, T, D] → [B, Hkv·group, T, D], each key/value head repeated for its query heads. */
export function repeatHeads(x: Tensor, group: number): Tensor {
  if (group === 1) return x;
  const [batch, kvHeads, seqLen, dim] = x.shape;
  const expanded = x.reshape([batch, kvHeads, 1, seqLen, dim]);
  return concat(Array(group).fill(expanded), 2).reshape([batch, kvHeads * group, seqLen, dim]);
}

/** Additive logits (ALiBi and MASKED_LOGIT) and the 0/1 keep mask, both [B, H, T, T]. */
function hostMasks(
  batch: number,
  heads: number,
  kvHeads: number,
  seqLen: number,
  options: UnfusedAttentionOptions,
): { additive: Float64Array; keep: Float64Array } {
  const size = batch * heads * seqLen * seqLen;
  const additive = new Float64Array(size);
  const keep = new Float64Array(size);
  const group = heads / kvHeads;
  const initialKeys = options.initialKeys ?? 0;
  const causal = options.causal ?? true;

  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const window = options.windows ? options.windows[h] : options.window ?? 0;
      const kvh = Math.floor(h / group);
      for (let i = 0; i < seqLen; i++) {
        for (let j = 0; j < seqLen; j++) {
          const index = ((b * heads + h) * seqLen + i) * seqLen + j;
          const distance = causal ? i - j : Math.abs(i - j);
          let visible = !causal || j <= i;
          if (window > 0 && distance >= window && j >= initialKeys) visible = false;
          if (options.keyMask && options.keyMask[b * seqLen + j] === 0) visible = false;
          if (options.keyEnds && i >= options.keyEnds[(b * kvHeads + kvh) * seqLen + j]) {
            visible = false;
          }
          keep[index] = visible ? 1 : 0;
          additive[index] = visible ? -(options.alibiSlopes?.[h] ?? 0) * distance : MASKED_LOGIT;
        }
      }
    }
  }
  return { additive, keep };
}
