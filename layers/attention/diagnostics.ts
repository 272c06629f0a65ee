/**
 * Attention diagnostics as flat rows of named numbers, ready for a CSV writer:
 * - the attention-sink rate of Gu et al. ("When Attention Sink Emerges", arXiv 2410.10781): the
 *   share of (sequence, layer, head) triples whose mean attention on key k exceeds ε = 0.3, where
 *   the mean runs over the queries that may see k;
 * - attention entropy per layer and head;
 * - MoH head usage and load balance, and DMA's kept fraction of causal keys.
 *
 * The pure functions read host arrays; `collectAttentionDiagnostics` runs a model on probe
 * sequences and computes them all.
 */

import type { HostArray } from "../../kernels/backend.ts";
import { noGrad, type Tensor, withScopeAsync } from "../../tensor/mod.ts";
import type { AttentionModule } from "./base.ts";
import { DynamicMaskAttention } from "./dma.ts";
import { MixtureOfHeadsAttention } from "./moh.ts";

/** One CSV row: column name → value. */
export type DiagnosticRow = Record<string, number>;

/** Probabilities of one layer: [batch, heads, seqLen, seqLen], rows over keys. */
export interface AttentionMap {
  probs: ArrayLike<number>;
  batch: number;
  heads: number;
  seqLen: number;
}

/**
 * Mean attention that key `key` receives from the queries allowed to see it (i ≥ key), for one
 * (sequence, head) map at `offset` in `probs`.
 */
export function keyImportance(
  probs: ArrayLike<number>,
  offset: number,
  seqLen: number,
  key: number,
): number {
  let total = 0;
  for (let i = key; i < seqLen; i++) total += probs[offset + i * seqLen + key];
  return total / (seqLen - key);
}

/**
 * Sink^ε_k: the fraction of (sequence, layer, head) maps in which key `key` (0 = first token) has
 * importance above `epsilon`. Returns a fraction in [0, 1], not a percentage.
 */
export function sinkRate(maps: readonly AttentionMap[], epsilon = 0.3, key = 0): number {
  let sinks = 0;
  let count = 0;
  for (const map of maps) {
    const size = map.seqLen * map.seqLen;
    for (let m = 0; m < map.batch * map.heads; m++) {
      if (keyImportance(map.probs, m * size, map.seqLen, key) > epsilon) sinks++;
      count++;
    }
  }
  return count === 0 ? 0 : sinks / count;
}

/**
 * Mean Shannon entropy in nats of each head's rows, over sequences and queries, one row per
 * (layer, head). Rows summing below 1 (a sink's share) are used as they are.
 */
export function attentionEntropy(maps: readonly AttentionMap[]): DiagnosticRow[] {
  const rows: DiagnosticRow[] = [];
  maps.forEach((map, layer) => {
    const t = map.seqLen;
    for (let h = 0; h < map.heads; h++) {
      let total = 0;
      for (let b = 0; b < map.batch; b++) {
        for (let i = 0; i < t; i++) {
          const base = ((b * map.heads + h) * t + i) * t;
          for (let j = 0; j < t; j++) {
            const p = map.probs[base + j];
            if (p > 0) total -= p * Math.log(p);
          }
        }
      }
      rows.push({ layer, head: h, entropy: total / Math.max(map.batch * t, 1) });
    }
  });
  return rows;
}

/** MoH usage of one layer from its gates [tokens, H] and routed mask [tokens, R]. */
export function mohHeadUsage(
  layer: number,
  gates: HostArray,
  routedMask: HostArray | null,
  sharedHeads: number,
  heads: number,
  extras: { loadBalance?: number; stageWeights?: HostArray | null } = {},
): DiagnosticRow[] {
  const tokens = gates.length / heads;
  let active = 0;
  for (let i = 0; i < gates.length; i++) if (gates[i] !== 0) active++;
  const summary: DiagnosticRow = {
    layer,
    activeFraction: tokens === 0 ? 0 : active / gates.length,
  };
  if (extras.loadBalance !== undefined) summary.loadBalance = extras.loadBalance;
  if (extras.stageWeights) {
    let alphaShared = 0;
    for (let n = 0; n < tokens; n++) alphaShared += extras.stageWeights[2 * n];
    summary.meanAlphaShared = alphaShared / Math.max(tokens, 1);
    summary.meanAlphaRouted = 1 - summary.meanAlphaShared;
  }

  const rows: DiagnosticRow[] = [summary];
  const routed = heads - sharedHeads;
  if (routedMask !== null) {
    for (let j = 0; j < routed; j++) {
      let chosen = 0;
      for (let n = 0; n < tokens; n++) chosen += routedMask[n * routed + j];
      rows.push({ layer, head: sharedHeads + j, load: chosen / Math.max(tokens, 1) });
    }
  }
  return rows;
}

/**
 * DMA's kept fraction: the mean over queries i (and sequences and heads) of the keys kept
 * divided by the i + 1 keys that causal attention would see. 1 means no sparsity.
 */
export function dmaKeptFraction(keyEnds: ArrayLike<number>, rows: number, seqLen: number): number {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * seqLen;
    for (let i = 0; i < seqLen; i++) {
      let kept = 0;
      for (let j = 0; j <= i; j++) if (i < keyEnds[base + j]) kept++;
      total += kept / (i + 1);
    }
  }
  return rows * seqLen === 0 ? 1 : total / (rows * seqLen);
}

/** The parts of a model that the diagnostics use. */
export interface AttentionModel {
  blocks: readonly { attention: AttentionModule }[];
  forward(ids: Tensor): Tensor;
}

export interface AttentionDiagnostics {
  /** Sink^ε_1 over every layer and head, as a fraction. */
  sinkRate: number;
  /** Rows { layer, head, entropy }. */
  entropy: DiagnosticRow[];
  /** MoH rows: per layer { layer, activeFraction, loadBalance, ... } and { layer, head, load }. */
  mohUsage: DiagnosticRow[];
  /** DMA rows { layer, keptFraction }. */
  dmaKept: DiagnosticRow[];
}

/**
 * Runs `model` without gradients on fixed probe sequences `ids` [B, T] (the sink metric uses
 * T = 64) and computes every diagnostic. Reads back the probabilities of every layer.
 */
export function collectAttentionDiagnostics(
  model: AttentionModel,
  ids: Tensor,
  epsilon = 0.3,
): Promise<AttentionDiagnostics> {
  const layers = model.blocks.map((block) => block.attention);
  return withScopeAsync(async () => {
    for (const layer of layers) layer.recordProbs = true;
    try {
      noGrad(() => model.forward(ids));
    } finally {
      for (const layer of layers) layer.recordProbs = false;
    }

    const maps: AttentionMap[] = [];
    const mohUsage: DiagnosticRow[] = [];
    const dmaKept: DiagnosticRow[] = [];
    for (const [index, layer] of layers.entries()) {
      const probs = layer.probs;
      layer.probs = null;
      if (probs !== null) {
        const [batch, heads, seqLen] = probs.shape;
        maps.push({ probs: await probs.data(), batch, heads, seqLen });
      }
      if (layer instanceof MixtureOfHeadsAttention && layer.state !== null) {
        const s = layer.state;
        mohUsage.push(
          ...mohHeadUsage(
            index,
            await s.gates.data(),
            s.routedMask === null ? null : await s.routedMask.data(),
            layer.sharedHeads,
            layer.numHeads,
            {
              loadBalance: s.loadBalance === null ? undefined : await s.loadBalance.item(),
              stageWeights: s.stageWeights === null ? null : await s.stageWeights.data(),
            },
          ),
        );
      }
      if (layer instanceof DynamicMaskAttention && layer.keyEnds !== null) {
        const ends = layer.keyEnds;
        const seqLen = ends.shape[ends.rank - 1];
        const fraction = dmaKeptFraction(await ends.data(), ends.size / seqLen, seqLen);
        dmaKept.push({ layer: index, keptFraction: fraction });
      }
    }
    return {
      sinkRate: sinkRate(maps, epsilon, 0),
      entropy: attentionEntropy(maps),
      mohUsage,
      dmaKept,
    };
  });
}
