/**
 * Scaled dot-product attention, causal unless the context sets `causal: false`, with the options
 * that most variants are built from. They are grouped-query heads, rotary or ALiBi positions,
 * uniform or per-head sliding windows, a learnable sink logit or key bias, sigmoid scoring without
 * normalisation and output gates. Hooks add per-token head gates (MoH) and per-key biases (DMA).
 *
 * The default configuration (no extras, unfused kernel) runs the same ops as moelab's original
 * multi-head attention, so its numbers are unchanged.
 */

import {
  add,
  attention,
  attentionProbs,
  div,
  type FusedAttentionOptions,
  matmul,
  mul,
  noGrad,
  rope,
  scale,
  sigmoid,
  softmax,
  sum,
  Tensor,
  transpose,
} from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import { isGradEnabled } from "../../tensor/tensor.ts";
import { Linear } from "../linear.ts";
import { constantParameter, normalParameter } from "../module.ts";
import {
  AttentionConfigError,
  type AttentionContext,
  AttentionModule,
  type AttentionOutput,
  checkHeads,
  optionPath,
  requireCausal,
} from "./base.ts";
import { type CalibrateOptions, calibrateProbs, visibleKeyCounts } from "./calibration.ts";
import { repeatHeads, unfusedAttention } from "./unfused.ts";

export interface DotProductConfig {
  /** Registered name of the variant that built this module. */
  variant: string;
  /** Key and value heads; numHeads for MHA, 1 for multi-query attention. */
  numKvHeads: number;
  /** "unfused" materialises the T×T scores; "fused" runs the flash-style kernel. */
  kernel: "unfused" | "fused";
  alibi: boolean;
  /** Uniform sliding window in keys; 0 means none. */
  window: number;
  /** Per-head spans S_h(N) = alpha_h + beta_h·N (Mixture of Attention Spans), or null. */
  spans: { alpha: number[]; beta: number[] } | null;
  /** Keys before this position stay visible to every query (StreamingLLM-style initial tokens). */
  initialKeys: number;
  normalization: "softmax" | "sigmoid";
  /** "logit": a learnable logit per head in the softmax denominator; "keyBias": a learnable key. */
  sink: "none" | "logit" | "keyBias";
  sinkInit: number;
  /** Output gate Y ⊙ sigmoid(x·W) before the output projection, per element or per head. */
  gate: "none" | "elementwise" | "headwise";
  /** ACT attention calibration for evaluation forwards, or undefined/null for none. */
  calibrate?: CalibrateOptions | null;
}

/** Defaults of a plain multi-head attention. */
export function defaultDotProductConfig(numHeads: number): DotProductConfig {
  return {
    variant: "mha",
    numKvHeads: numHeads,
    kernel: "unfused",
    alibi: false,
    window: 0,
    spans: null,
    initialKeys: 0,
    normalization: "softmax",
    sink: "none",
    sinkInit: 0,
    gate: "none",
  };
}

/** ALiBi slopes 2^(−8(h+1)/H) (Press et al., "Train Short, Test Long", 2022). */
export function alibiSlopes(numHeads: number): number[] {
  return Array.from({ length: numHeads }, (_, h) => 2 ** (-8 * (h + 1) / numHeads));
}

/** Queries, keys and values of one forward, split into heads: [B, H, T, d] and [B, Hkv, T, d]. */
export interface Projected {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  batch: number;
  seqLen: number;
}

export class DotProductAttention extends AttentionModule {
  readonly variant: string;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly query: Linear;
  readonly key: Linear;
  readonly value: Linear;
  readonly output: Linear;
  readonly gate: Linear | null;
  readonly sinkLogit: Tensor | null;
  readonly sinkKey: Tensor | null;
  readonly #alibi: Tensor | null;

  constructor(readonly context: AttentionContext, readonly config: DotProductConfig) {
    super();
    const { backend, rng, dModel, numHeads, initStd } = context;
    this.headDim = checkHeads(context);
    this.variant = config.variant;
    this.numHeads = numHeads;
    this.numKvHeads = config.numKvHeads;
    checkDotProductConfig(context, config);

    const kvWidth = this.numKvHeads * this.headDim;
    this.query = this.addModule("query", new Linear(backend, rng, dModel, dModel, { initStd }));
    this.key = this.addModule("key", new Linear(backend, rng, dModel, kvWidth, { initStd }));
    this.value = this.addModule("value", new Linear(backend, rng, dModel, kvWidth, { initStd }));
    this.output = this.addModule(
      "output",
      new Linear(backend, rng, dModel, dModel, { initStd: context.outputInitStd }),
    );

    const gateWidth = config.gate === "elementwise" ? dModel : numHeads;
    this.gate = config.gate === "none"
      ? null
      : this.addModule("gate", new Linear(backend, rng, dModel, gateWidth, { initStd }));
    this.sinkLogit = config.sink === "logit"
      ? this.addParameter("sinkLogit", constantParameter(backend, [numHeads], config.sinkInit))
      : null;
    // The sink key k* of Gu et al.: per head, N(0, 0.02), never rotated, paired with value 0.
    this.sinkKey = config.sink === "keyBias"
      ? this.addParameter("sinkKey", normalParameter(backend, rng, [numHeads, this.headDim], 0.02))
      : null;
    if (config.alibi) {
      this.#alibi = Tensor.fromArray(backend, alibiSlopes(numHeads), [numHeads], "f32");
      this.#alibi.persistent = true;
    } else {
      this.#alibi = null;
    }
  }

  forward(x: Tensor): Tensor {
    if (!this.recordProbs) return this.run(x, false).output;
    const { output, probs } = this.run(x, true);
    this.probs = probs ?? null;
    return output;
  }

  forwardWithProbs(x: Tensor): AttentionOutput {
    return this.run(x, true);
  }

  override dispose(): void {
    super.dispose();
    this.#alibi?.dispose();
  }

  /** Projects x [B, T, dModel] into rotated heads. */
  protected project(x: Tensor): Projected {
    const dModel = this.context.dModel;
    if (x.rank !== 3 || x.shape[2] !== dModel) {
      throw new ShapeError(
        `attention: expected input [batch, seqLen, ${dModel}], got ${x.describe()}`,
      );
    }
    const [batch, seqLen] = x.shape;
    const split = (t: Tensor, heads: number) =>
      transpose(t.reshape([batch, seqLen, heads, this.headDim]), 1, 2);
    let q = split(this.query.forward(x), this.numHeads);
    let k = split(this.key.forward(x), this.numKvHeads);
    const v = split(this.value.forward(x), this.numKvHeads);
    if (this.context.rope !== null) {
      const { cos, sin } = this.context.rope.get(seqLen);
      q = rope(q, cos, sin);
      k = rope(k, cos, sin);
    }
    return { q, k, v, batch, seqLen };
  }

  /** Hook for DMA: extra fused-kernel options (a per-key bias and key ends) for this forward. */
  protected keyOptions(_p: Projected): Partial<FusedAttentionOptions> {
    return {};
  }

  /** Hook for MoH: per-token head weights [B, T, H], or null for none. */
  protected headGates(_x: Tensor): Tensor | null {
    return null;
  }

  protected run(x: Tensor, withProbs: boolean): AttentionOutput {
    const p = this.project(x);
    const { context, probs } = this.attend(p, withProbs);

    // [B, H, T, d] → [B, T, H, d]
    let heads = transpose(context, 1, 2);
    const headGates = this.headGates(x);
    if (headGates !== null) heads = mul(heads, headGates.reshape([p.batch, p.seqLen, -1, 1]));
    if (this.gate !== null) {
      const g = sigmoid(this.gate.forward(x));
      heads = this.config.gate === "elementwise"
        ? mul(heads, g.reshape(heads.shape))
        : mul(heads, g.reshape([p.batch, p.seqLen, this.numHeads, 1]));
    }
    const merged = heads.reshape([p.batch, p.seqLen, this.context.dModel]);
    return { output: this.output.forward(merged), probs };
  }

  /** The attention context [B, H, T, headDim] and, on request, the probabilities. */
  protected attend(p: Projected, withProbs: boolean): { context: Tensor; probs?: Tensor } {
    if (this.config.normalization === "sigmoid") return this.sigmoidAttention(p, withProbs);
    if (this.config.calibrate?.enabled && !isGradEnabled()) {
      return this.calibratedAttention(p, withProbs);
    }
    const options = this.fusedOptions(p);
    const plain = this.numKvHeads === this.numHeads && !this.config.alibi &&
      this.config.window === 0 && this.config.spans === null && this.config.sink === "none" &&
      options.bias === undefined && options.keyEnds === undefined;
    const causal = this.context.causal ?? true;
    // The fused kernel masks later keys unconditionally (Backend.attention has no non-causal
    // option), so non-causal attention takes the unfused path whatever `kernel` says.
    const unfused = this.config.kernel === "unfused" || !causal;

    if (unfused && plain) {
      // moelab's original path: scaling q first touches T·d elements instead of T·T.
      const scores = matmul(scale(p.q, 1 / Math.sqrt(this.headDim)), p.k, { transB: true });
      const probs = softmax(scores, { causal });
      return { context: matmul(probs, p.v), probs: withProbs ? probs : undefined };
    }
    if (unfused && options.keyEnds === undefined) {
      const { output, probs } = unfusedAttention(p.q, p.k, p.v, {
        causal,
        window: this.config.window,
        windows: this.headWindows(p.seqLen) ?? undefined,
        initialKeys: this.config.initialKeys,
        bias: options.bias,
        alibiSlopes: this.config.alibi ? alibiSlopes(this.numHeads) : undefined,
        sink: options.sink,
      });
      return { context: output, probs: withProbs ? probs : undefined };
    }

    const windows = this.headWindows(p.seqLen);
    if (windows !== null) {
      options.windows = Tensor.fromArray(p.q.backend, Int32Array.from(windows), [this.numHeads]);
    }
    const context = attention(p.q, p.k, p.v, options);
    const probs = withProbs ? noGrad(() => attentionProbs(p.q, p.k, options)) : undefined;
    return { context, probs };
  }

  /**
   * Evaluation-time ACT: the unfused probabilities, calibrated, times the values. Only variants
   * without sinks, key biases or key ends reach it (checkDotProductConfig enforces that).
   */
  protected calibratedAttention(
    p: Projected,
    withProbs: boolean,
  ): { context: Tensor; probs?: Tensor } {
    const windows = this.headWindows(p.seqLen);
    const causal = this.context.causal ?? true;
    const { probs } = unfusedAttention(p.q, p.k, p.v, {
      causal,
      window: this.config.window,
      windows: windows ?? undefined,
      initialKeys: this.config.initialKeys,
      alibiSlopes: this.config.alibi ? alibiSlopes(this.numHeads) : undefined,
    });
    const headWindows = windows ?? Array(this.numHeads).fill(this.config.window);
    const calibrated = calibrateProbs(probs, this.config.calibrate!, {
      numHeads: this.numHeads,
      seqLen: p.seqLen,
      visibleKeys: visibleKeyCounts(
        this.numHeads,
        p.seqLen,
        headWindows,
        this.config.initialKeys,
        causal,
      ),
    });
    const v = repeatHeads(p.v, this.numHeads / this.numKvHeads);
    return { context: matmul(calibrated, v), probs: withProbs ? calibrated : undefined };
  }

  /** Options of the fused kernel for this forward, windows excluded. */
  protected fusedOptions(p: Projected): FusedAttentionOptions {
    const options: FusedAttentionOptions = {
      window: this.config.window,
      initialKeys: this.config.initialKeys,
      alibiSlopes: this.#alibi ?? undefined,
      ...this.keyOptions(p),
    };
    if (this.sinkLogit !== null) options.sink = this.sinkLogit;
    if (this.sinkKey !== null) {
      // The logit of k* for every query: q·k*/√d, shape [B, H, T].
      const keys = this.sinkKey.reshape([this.numHeads, 1, this.headDim]);
      options.sink = scale(sum(mul(p.q, keys), 3), 1 / Math.sqrt(this.headDim));
    }
    return options;
  }

  /** MoA spans clipped to [1, seqLen] for this length, or null without spans. */
  headWindows(seqLen: number): number[] | null {
    const spans = this.config.spans;
    if (spans === null) return null;
    return spans.alpha.map((alpha, h) => {
      const span = Math.round(alpha + spans.beta[h] * seqLen);
      return Math.min(Math.max(span, 1), seqLen);
    });
  }

  /**
   * Sigmoid attention without normalisation (Gu et al., "When Attention Sink Emerges"): weights
   * sigmoid(q·k/√d) on visible keys, no row sum. The returned probabilities are the weights
   * divided by their row sum, the proxy scores that the sink metric uses for such operators.
   */
  protected sigmoidAttention(
    p: Projected,
    withProbs: boolean,
  ): { context: Tensor; probs?: Tensor } {
    const group = this.numHeads / this.numKvHeads;
    const k = repeatHeads(p.k, group);
    const v = repeatHeads(p.v, group);
    const scores = matmul(scale(p.q, 1 / Math.sqrt(this.headDim)), k, { transB: true });
    const mask = visibilityMask(
      p,
      this.context.causal ?? true,
      this.config.window,
      this.headWindows(p.seqLen),
    );
    const weights = mul(sigmoid(scores), mask);
    const context = matmul(weights, v);
    if (!withProbs) return { context };
    // The 1e-8 keeps a row with no visible key at 0 instead of 0/0.
    const probs = noGrad(() =>
      div(weights, add(sum(weights, 3, true), Tensor.full(p.q.backend, [1], 1e-8)))
    );
    return { context, probs };
  }
}

/**
 * Builds the 0/1 mask [H or 1, T, T] of visible keys for unnormalised attention: causal and
 * windowed, or all ones when non-causal (windows are rejected then).
 */
function visibilityMask(
  p: Projected,
  causal: boolean,
  window: number,
  windows: number[] | null,
): Tensor {
  const heads = windows === null ? 1 : windows.length;
  const t = p.seqLen;
  const mask = new Float64Array(heads * t * t);
  for (let h = 0; h < heads; h++) {
    const w = windows === null ? window : windows[h];
    for (let i = 0; i < t; i++) {
      for (let j = 0; j < (causal ? i + 1 : t); j++) {
        if (w === 0 || i - j < w) mask[(h * t + i) * t + j] = 1;
      }
    }
  }
  return Tensor.fromArray(p.q.backend, mask, [heads, t, t], "f32");
}

/** Validates options that depend on the model's sizes, naming the option path and a fix. */
export function checkDotProductConfig(context: AttentionContext, config: DotProductConfig): void {
  const { numHeads } = context;
  const kv = config.numKvHeads;
  if (!Number.isInteger(kv) || kv < 1 || numHeads % kv !== 0) {
    throw new AttentionConfigError(
      `${optionPath(context, "numKvHeads")} is ${kv} but numHeads is ${numHeads}; choose a ` +
        `divisor of ${numHeads} (1 for multi-query attention)`,
    );
  }
  if (!Number.isInteger(config.window) || config.window < 0) {
    throw new AttentionConfigError(
      `${optionPath(context, "window")} is ${config.window}; choose a positive number of keys`,
    );
  }
  if (config.window > 0 || config.spans !== null) {
    requireCausal(context, config.variant, "limits each query to a window of past keys");
  }
  if (config.spans !== null) {
    for (const name of ["alpha", "beta"] as const) {
      if (config.spans[name].length !== numHeads) {
        throw new AttentionConfigError(
          `${optionPath(context, name)} has ${config.spans[name].length} entries but numHeads ` +
            `is ${numHeads}; give one per head`,
        );
      }
    }
  }
  if (config.calibrate?.enabled && (config.normalization === "sigmoid" || config.sink !== "none")) {
    throw new AttentionConfigError(
      `${optionPath(context, "calibrate.enabled")} is true, but ACT needs softmax rows that sum ` +
        "to 1 without a sink; disable calibrate or use mha, window, moa, gated or gaam",
    );
  }
  if (config.normalization === "sigmoid" && (config.sink !== "none" || config.alibi)) {
    throw new AttentionConfigError(
      `${optionPath(context, "name")} is sigmoid, which supports no sink and no ALiBi; ` +
        "use a softmax variant for those",
    );
  }
}
