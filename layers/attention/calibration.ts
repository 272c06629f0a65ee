/**
 * ACT, the attention calibration technique of Yu et al. ("Unveiling and Harnessing Hidden
 * Attention Sinks", ICML 2024, arXiv 2406.15765). It is training-free and runs only in evaluation
 * forwards: in the calibrated heads, a key j whose weight a_ij exceeds α/N_i (N_i = keys visible to
 * query i) is a sink. Its weight is scaled by β, and the freed mass goes back to the non-sink keys
 * of the row in proportion to their weights, so each row still sums to 1.
 *
 * The threshold is composed from existing ops: step(z) = relu(z) / (relu(z) + 1e-30) is exactly 0
 * for z ≤ 0 and rounds to 1 for any z above about 1e-28, far below any probability gap that matters.
 */

import { z } from "zod";
import { add, addScalar, div, mul, relu, scale, sub, sum, Tensor } from "../../tensor/mod.ts";

export const calibrateOptionsSchema = z.object({
  /** Applies ACT in evaluation forwards (no gradient recording); training forwards never change. */
  enabled: z.boolean().default(false),
  /** α: a key is a sink when its weight exceeds α / (keys visible to the query). */
  threshold: z.number().positive().default(5),
  /** β: factor on a sink's weight; the rest is given to the row's other keys. */
  scale: z.number().min(0).max(1).default(0.4),
  /**
   * Keeps the first token out of calibration. Whether ACT excludes it is unverified; excluding it
   * keeps the first-token sink that models rely on.
   */
  excludeFirst: z.boolean().default(true),
  /** Heads to calibrate (ACT searches them offline on a calibration set); omitted means all. */
  heads: z.array(z.number().int().nonnegative()).optional(),
}).strict();
export type CalibrateOptions = z.infer<typeof calibrateOptionsSchema>;

/** The host-side layout a calibration needs: visible key counts per (head, query). */
export interface CalibrationLayout {
  numHeads: number;
  seqLen: number;
  /** [numHeads · seqLen] keys visible to each query of each head (≥ 1). */
  visibleKeys: ArrayLike<number>;
}

/**
 * Visible keys per (head, query) under the masks of `unfusedAttention`: causal (j ≤ i) or not,
 * with optional per-head windows (0 means none) and initial keys that every query sees.
 */
export function visibleKeyCounts(
  numHeads: number,
  seqLen: number,
  windows: readonly number[],
  initialKeys: number,
  causal = true,
): Float64Array {
  const counts = new Float64Array(numHeads * seqLen);
  for (let h = 0; h < numHeads; h++) {
    const window = windows[h] ?? 0;
    for (let i = 0; i < seqLen; i++) {
      let visible = 0;
      for (let j = 0; j < (causal ? i + 1 : seqLen); j++) {
        const distance = causal ? i - j : Math.abs(i - j);
        if (window === 0 || distance < window || j < initialKeys) visible++;
      }
      counts[h * seqLen + i] = visible;
    }
  }
  return counts;
}

/**
 * Calibrates probabilities [B, H, T, T] (rows summing to 1, hidden keys at 0) and returns the
 * calibrated probabilities. The result is differentiable through the ops, but ACT is meant for
 * evaluation only.
 */
export function calibrateProbs(
  probs: Tensor,
  options: CalibrateOptions,
  layout: CalibrationLayout,
): Tensor {
  const { numHeads, seqLen } = layout;
  const backend = probs.backend;

  // τ_hi = α / N_hi, and a per-key eligibility mask (heads selected, first key excluded).
  const thresholds = new Float64Array(numHeads * seqLen);
  for (let n = 0; n < thresholds.length; n++) {
    thresholds[n] = options.threshold / Math.max(layout.visibleKeys[n], 1);
  }
  const eligible = new Float64Array(numHeads * seqLen);
  const selected = new Set(options.heads ?? Array.from({ length: numHeads }, (_, h) => h));
  for (let h = 0; h < numHeads; h++) {
    if (!selected.has(h)) continue;
    for (let j = options.excludeFirst ? 1 : 0; j < seqLen; j++) eligible[h * seqLen + j] = 1;
  }
  const threshold = Tensor.fromArray(backend, thresholds, [numHeads, seqLen, 1], "f32");
  const eligibleKeys = Tensor.fromArray(backend, eligible, [numHeads, 1, seqLen], "f32");

  // s_ij ∈ {0, 1}: 1 for a sink key.
  const above = relu(sub(probs, threshold));
  const sinks = mul(div(above, addScalar(above, 1e-30)), eligibleKeys);

  // Sinks keep β·a; the freed (1 − β)·Σ sink weight is spread over the others by weight.
  const sinkWeights = mul(probs, sinks);
  const otherWeights = sub(probs, sinkWeights);
  const freed = scale(sum(sinkWeights, 3, true), 1 - options.scale);
  const otherMass = addScalar(sum(otherWeights, 3, true), 1e-30);
  const boost = addScalar(div(freed, otherMass), 1);
  return add(scale(sinkWeights, options.scale), mul(otherWeights, boost));
}
