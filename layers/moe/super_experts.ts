/**
 * Super Experts (Su et al., "Unveiling Super Experts in Mixture-of-Experts Large Language
 * Models", arXiv 2507.23279): the few experts whose down-projection outputs carry extreme
 * activations. Profiling records, per MoE layer and routed expert, the largest |down-projection
 * output| over a calibration set; flagging applies the authors' rule; pruning zeroes the flagged
 * experts' outputs and compares the loss with zeroing the same number of random experts.
 *
 * Flagging rule of the authors' `eval_utils.py`: keep layers l < round(0.75 · numLayers); over the
 * kept values O[l, e], an expert is super when O[l, e] > the 99.5th percentile AND
 * O[l, e] > floor(max O / 10).
 *
 * NOTE: only routed experts are profiled. The layer fuses its shared experts into one MLP, so
 * their individual down projections are not observable here.
 */

import { crossEntropy, noGrad, type Rng, type Tensor, withScope } from "../../tensor/mod.ts";
import type { MoeLayer } from "./moe_layer.ts";

/** A model with MoE layers whose forward maps token ids [B, T] to logits [B, T, vocab]. */
export interface MoeModel {
  forward(ids: Tensor): Tensor;
  moeLayers(): { layer: number; moe: MoeLayer }[];
  /** Blocks in the model, MoE or not. */
  readonly blocks: readonly unknown[];
}

/** One calibration or evaluation batch: ids [B, T] and next-token targets [B·T]. */
export interface TokenBatch {
  ids: Tensor;
  targets: Tensor;
}

/** Per MoE layer, the largest |down-projection output| of each routed expert. */
export interface ExpertPeaks {
  /** Blocks in the model (the denominator of the layer cut-off). */
  numLayers: number;
  layers: { layer: number; peaks: number[] }[];
}

/** A flagged (block, expert) pair. */
export interface SuperExpert {
  layer: number;
  expert: number;
  peak: number;
}

/**
 * Runs `batches` through the model without gradient and returns, for every MoE layer and routed
 * expert, the maximum over all calls of max |down-projection output|. An expert that receives no
 * token in any batch gets 0, as in the authors' hooks.
 */
export async function profileSuperExperts(
  model: MoeModel,
  batches: Iterable<TokenBatch>,
): Promise<ExpertPeaks> {
  const layers = model.moeLayers();
  const peaks = layers.map(({ moe }) => new Array<number>(moe.options.routedExperts).fill(0));
  for (const { moe } of layers) moe.recordExpertOutputs = true;
  try {
    for (const batch of batches) {
      withScope(() => noGrad(() => model.forward(batch.ids))).dispose();
      for (let i = 0; i < layers.length; i++) {
        const record = layers[i].moe.lastExpertOutputs;
        if (record === null) continue;
        const outputs = await record.outputs.data();
        const offsets = await record.offsets.data();
        accumulatePeaks(peaks[i], outputs, offsets, record.outputs.shape[1]);
      }
    }
  } finally {
    for (const { moe } of layers) moe.recordExpertOutputs = false;
  }
  return {
    numLayers: model.blocks.length,
    layers: layers.map(({ layer }, i) => ({ layer, peaks: peaks[i] })),
  };
}

/** Raises `peaks[e]` to the max |value| of expert e's rows in expert-grouped `outputs`. */
function accumulatePeaks(
  peaks: number[],
  outputs: ArrayLike<number>,
  offsets: ArrayLike<number>,
  dModel: number,
): void {
  const rows = outputs.length / dModel;
  for (let e = 0; e < peaks.length; e++) {
    const end = e + 1 < peaks.length ? offsets[e + 1] : rows;
    for (let i = offsets[e] * dModel; i < Math.min(end, rows) * dModel; i++) {
      const magnitude = Math.abs(outputs[i]);
      if (magnitude > peaks[e]) peaks[e] = magnitude;
    }
  }
}

/** Computes the q-th percentile (0–100) by linear interpolation, as NumPy's default does. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) throw new Error("percentile: no values");
  const sorted = [...values].sort((a, b) => a - b);
  const position = (q / 100) * (sorted.length - 1);
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below] + (sorted[above] - sorted[below]) * (position - below);
}

export interface FlagOptions {
  /** Fraction of the blocks, from the first, whose experts are candidates (default 0.75). */
  includeLayers?: number;
  /** Percentile a peak must exceed (default 99.5). */
  percentile?: number;
}

/**
 * Applies the Super Experts rule to profiled peaks. Returns the flagged experts, largest peak
 * first; an empty list is a valid outcome (small models may have none).
 */
export function flagSuperExperts(table: ExpertPeaks, options: FlagOptions = {}): SuperExpert[] {
  const cutoff = Math.round((options.includeLayers ?? 0.75) * table.numLayers);
  const candidates: SuperExpert[] = [];
  for (const { layer, peaks } of table.layers) {
    if (layer >= cutoff) continue;
    peaks.forEach((peak, expert) => candidates.push({ layer, expert, peak }));
  }
  if (candidates.length === 0) return [];

  const values = candidates.map((c) => c.peak);
  const threshold = percentile(values, options.percentile ?? 99.5);
  const floorOfTenth = Math.floor(Math.max(...values) / 10);
  return candidates
    .filter((c) => c.peak > threshold && c.peak > floorOfTenth)
    .sort((a, b) => b.peak - a.peak);
}

/** Mean cross-entropy (nats) over `batches`, without auxiliary losses and without gradient. */
export async function evaluateLoss(
  model: MoeModel,
  batches: Iterable<TokenBatch>,
): Promise<number> {
  let total = 0;
  let count = 0;
  for (const batch of batches) {
    const loss = withScope(() =>
      noGrad(() => crossEntropy(model.forward(batch.ids), batch.targets))
    );
    total += await loss.item();
    loss.dispose();
    count++;
  }
  return count === 0 ? NaN : total / count;
}

export interface PruningComparison {
  /** Loss with every expert enabled. */
  baseLoss: number;
  /** Loss with the flagged experts' outputs zeroed. */
  superLoss: number;
  /** Loss of each random draw of as many non-flagged experts. */
  randomLosses: number[];
  /** Mean of `randomLosses`. */
  randomLoss: number;
}

/**
 * Zeroes the outputs of `flagged` experts and, in `draws` separate evaluations, of the same number
 * of random non-flagged routed experts, and returns the losses on `batches` (a re-iterable
 * collection such as an array). Each layer's `disabledExperts` is restored to empty afterwards.
 */
export async function compareSuperExpertPruning(
  model: MoeModel,
  batches: readonly TokenBatch[],
  flagged: readonly Pick<SuperExpert, "layer" | "expert">[],
  rng: Rng,
  draws = 5,
): Promise<PruningComparison> {
  const layers = model.moeLayers();
  const byLayer = new Map(layers.map(({ layer, moe }) => [layer, moe]));
  const disable = (pairs: readonly Pick<SuperExpert, "layer" | "expert">[]) => {
    for (const { moe } of layers) moe.disabledExperts = [];
    for (const { layer, expert } of pairs) {
      const moe = byLayer.get(layer);
      if (moe === undefined) throw new Error(`block ${layer} has no MoE layer to prune`);
      moe.disabledExperts = [...moe.disabledExperts, expert];
    }
  };

  try {
    disable([]);
    const baseLoss = await evaluateLoss(model, batches);
    disable(flagged);
    const superLoss = await evaluateLoss(model, batches);

    const isFlagged = new Set(flagged.map(({ layer, expert }) => `${layer}:${expert}`));
    const pool = layers.flatMap(({ layer, moe }) =>
      Array.from({ length: moe.options.routedExperts }, (_, expert) => ({ layer, expert }))
        .filter(({ expert }) => !isFlagged.has(`${layer}:${expert}`))
    );
    const randomLosses: number[] = [];
    for (let d = 0; d < draws && flagged.length > 0; d++) {
      disable(sampleWithoutReplacement(pool, Math.min(flagged.length, pool.length), rng));
      randomLosses.push(await evaluateLoss(model, batches));
    }
    const randomLoss = randomLosses.length === 0
      ? baseLoss
      : randomLosses.reduce((a, b) => a + b, 0) / randomLosses.length;
    return { baseLoss, superLoss, randomLosses, randomLoss };
  } finally {
    for (const { moe } of layers) moe.disabledExperts = [];
  }
}

function sampleWithoutReplacement<T>(pool: readonly T[], count: number, rng: Rng): T[] {
  const copy = [...pool];
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(rng.uniform() * (copy.length - i));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy.slice(0, count);
}
