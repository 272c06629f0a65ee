/**
 * Causal multi-head self-attention, unfused: scores = q·kᵀ/√d_head, a causal softmax, then the
 * weighted sum of values. The T×T probabilities are materialised, which probes can read.
 */

import type { Backend } from "../../kernels/backend.ts";
import { matmul, Rng, rope, scale, softmax, Tensor, transpose } from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import { Linear } from "../linear.ts";
import { Module } from "../module.ts";
import type { RopeTables } from "../rope.ts";

export interface AttentionOptions {
  dModel: number;
  numHeads: number;
  initStd: number;
  outputInitStd: number;
  /** Rotary tables for q and k, or null for no rotary positions. */
  rope: RopeTables | null;
}

export class CausalSelfAttention extends Module {
  readonly query: Linear;
  readonly key: Linear;
  readonly value: Linear;
  readonly output: Linear;
  readonly headDim: number;

  constructor(backend: Backend, rng: Rng, readonly options: AttentionOptions) {
    super();
    const { dModel, numHeads, initStd } = options;
    if (dModel % numHeads !== 0) {
      throw new ShapeError(`attention: numHeads ${numHeads} does not divide dModel ${dModel}`);
    }
    this.headDim = dModel / numHeads;
    this.query = this.addModule("query", new Linear(backend, rng, dModel, dModel, { initStd }));
    this.key = this.addModule("key", new Linear(backend, rng, dModel, dModel, { initStd }));
    this.value = this.addModule("value", new Linear(backend, rng, dModel, dModel, { initStd }));
    this.output = this.addModule(
      "output",
      new Linear(backend, rng, dModel, dModel, { initStd: options.outputInitStd }),
    );
  }

  /** x is [B, T, dModel]; returns [B, T, dModel]. */
  forward(x: Tensor): Tensor {
    if (x.rank !== 3 || x.shape[2] !== this.options.dModel) {
      throw new ShapeError(
        `attention: expected input [batch, seqLen, ${this.options.dModel}], got ${x.describe()}`,
      );
    }
    const [batch, seqLen] = x.shape;
    const heads = this.options.numHeads;

    // [B, T, d] → [B, H, T, d_head]
    const split = (t: Tensor) => transpose(t.reshape([batch, seqLen, heads, this.headDim]), 1, 2);
    let q = split(this.query.forward(x));
    let k = split(this.key.forward(x));
    const v = split(this.value.forward(x));

    if (this.options.rope !== null) {
      const { cos, sin } = this.options.rope.get(seqLen);
      q = rope(q, cos, sin);
      k = rope(k, cos, sin);
    }

    // Scaling q before the product touches T·d elements instead of T·T.
    const scores = matmul(scale(q, 1 / Math.sqrt(this.headDim)), k, { transB: true });
    const probs = softmax(scores, { causal: true });
    const context = matmul(probs, v);

    const merged = transpose(context, 1, 2).reshape([batch, seqLen, this.options.dModel]);
    return this.output.forward(merged);
  }
}
