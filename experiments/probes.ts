/**
 * Diagnostics written every `train.probeEvery` steps on a fixed probe batch of validation data:
 *
 * - routing.csv, for models with MoE layers: one row per (step, layer, expert) with the expert's
 *   share of the layer's kept assignments (`load`). The layer's MaxVio, coefficient of variation,
 *   dead experts, drop rate, mean router entropy and routing fluctuation since the previous probe
 *   are repeated on each of its expert rows (`fluctuation`: share of probe tokens whose top-1 expert
 *   changed; `fluctuation_topk`: whose top-K set changed), then `max_vio_global`: MaxVio of the loads summed over the first `GLOBAL_BATCHES` validation
 *   batches (the probe batch among them), so it is not the mean of per-batch MaxVio values.
 * - attention.csv: one row per (step, layer, head) with the attention entropy and the model's
 *   attention-sink rate (share of heads whose mean attention on the first token exceeds 0.3),
 *   then `moh_load` (MoH layers: share of probe tokens that activate the head, 1 for shared
 *   heads) and `dma_kept_fraction` (DMA layers: the layer's mean kept share of causal keys,
 *   repeated on each head row). Both are NaN on layers of other variants.
 */

import { join } from "node:path";
import {
  type AttentionDiagnostics,
  collectAttentionDiagnostics,
} from "../layers/attention/diagnostics.ts";
import type { DecoderLM } from "../layers/models/decoder_lm.ts";
import {
  expertLoad,
  maxViolation,
  recordedExpertSets,
  routingFluctuation,
  routingMetrics,
} from "../layers/moe/diagnostics.ts";
import {
  compareSuperExpertPruning,
  flagSuperExperts,
  profileSuperExperts,
} from "../layers/moe/super_experts.ts";
import { noGrad, Rng, withScope } from "../tensor/mod.ts";
import { CsvWriter } from "./csv.ts";
import { LmModel, type TokenBatch } from "./tasks/lm_model.ts";
import type { Task, TaskModel } from "./tasks/task.ts";

// Per-layer routing columns, in the order routingMetrics returns them. Auxiliary losses are left
// out because their names vary by router; the training loss already includes them.
const LAYER_COLUMNS = ["max_vio", "cv", "dead_experts", "drop_rate", "router_entropy"];

/** Validation batches whose summed expert loads give `max_vio_global`. */
export const GLOBAL_BATCHES = 4;

/** Writes the probe CSVs of one run; `probe` is a no-op for models without what a file needs. */
export class Probes {
  readonly #decoder: DecoderLM | null;
  readonly #batch: TokenBatch | null;
  readonly #globalBatches: TokenBatch[];
  #routing: CsvWriter | null = null;
  #attention: CsvWriter | null = null;
  readonly #previousSets = new Map<number, number[][]>();

  private constructor(
    readonly dir: string,
    decoder: DecoderLM | null,
    batch: TokenBatch | null,
    readonly append: boolean,
    globalBatches: TokenBatch[] = [],
  ) {
    this.#decoder = decoder;
    this.#batch = batch;
    this.#globalBatches = globalBatches;
  }

  /**
   * Sets up probes for a run. Only decoder language models are probed today; the probe batch is
   * the task's first validation batch, so every probe sees the same tokens.
   */
  static create(
    dir: string,
    task: Task,
    model: TaskModel,
    batchSize: number,
    append: boolean,
  ): Probes {
    if (!(model instanceof LmModel)) return new Probes(dir, null, null, append);
    const batches = validationBatches(task, batchSize, GLOBAL_BATCHES);
    if (batches === undefined || batches.length === 0) return new Probes(dir, null, null, append);
    for (const batch of batches) {
      for (const tensor of batch.tensors()) tensor.persistent = true;
    }
    return new Probes(dir, model.decoder, batches[0], append, batches.slice(1));
  }

  /** Runs the probe batch and appends the rows of `step`. */
  async probe(step: number): Promise<void> {
    if (this.#decoder === null || this.#batch === null) return;
    const decoder = this.#decoder;
    const ids = this.#batch.inputs;

    if (decoder.moeLayers().length > 0) {
      // The probe batch runs last, so the layers' latest routing is the probe batch's.
      const globalLoads = await this.#globalLoads(decoder);
      const forward = withScope(() => noGrad(() => decoder.forward(ids)));
      forward.dispose();
      await this.#writeRouting(step, decoder, globalLoads);
    }

    const attention = await collectAttentionDiagnostics(decoder, ids);
    this.#attention ??= await CsvWriter.create(
      join(this.dir, "attention.csv"),
      ["step", "layer", "head", "entropy", "sink_rate", "moh_load", "dma_kept_fraction"],
      { append: this.append },
    );
    const { mohLoad, dmaKept } = headColumns(attention);
    for (const row of attention.entropy) {
      this.#attention.write({
        step,
        layer: row.layer,
        head: row.head,
        entropy: row.entropy,
        sink_rate: attention.sinkRate,
        moh_load: mohLoad.get(`${row.layer}/${row.head}`) ?? NaN,
        dma_kept_fraction: dmaKept.get(row.layer) ?? NaN,
      });
    }
  }

  /** Kept assignments per expert of each MoE layer, summed over the non-probe global batches. */
  async #globalLoads(decoder: DecoderLM): Promise<Map<number, Float64Array>> {
    const loads = new Map<number, Float64Array>();
    for (const batch of this.#globalBatches) {
      const forward = withScope(() => noGrad(() => decoder.forward(batch.inputs)));
      forward.dispose();
      await addLoads(loads, decoder);
    }
    return loads;
  }

  async #writeRouting(
    step: number,
    decoder: DecoderLM,
    globalLoads: Map<number, Float64Array>,
  ): Promise<void> {
    await addLoads(globalLoads, decoder);
    for (const { layer, record } of decoder.routing()) {
      const metrics = await routingMetrics(record);
      const sets = await recordedExpertSets(record);
      const previous = this.#previousSets.get(layer);
      const fluctuation = previous === undefined
        ? { topKSet: NaN, top1: NaN }
        : routingFluctuation(previous, sets);
      this.#previousSets.set(layer, sets);

      this.#routing ??= await CsvWriter.create(
        join(this.dir, "routing.csv"),
        [
          "step",
          "layer",
          "expert",
          "load",
          ...LAYER_COLUMNS,
          "fluctuation",
          "fluctuation_topk",
          "max_vio_global",
        ],
        { append: this.append },
      );
      for (let expert = 0; expert < record.numExperts; expert++) {
        const row: Record<string, number | string> = {
          step,
          layer,
          expert,
          load: metrics[`load_${expert}`],
          fluctuation: fluctuation.top1,
          fluctuation_topk: fluctuation.topKSet,
          max_vio_global: maxViolation(globalLoads.get(layer) ?? []),
        };
        for (const column of LAYER_COLUMNS) row[column] = metrics[column];
        this.#routing.write(row);
      }
    }
  }

  /**
   * Super-expert profiling (Su et al., arXiv 2507.23279): the largest |down-projection output| of every routed expert over
   * `batches` validation batches, written to super_experts.csv with the experts the percentile
   * rule flags, and the validation loss with the flagged experts zeroed against the same number
   * of random experts zeroed. Returns the losses for the summary; null without MoE layers.
   */
  async profileSuperExperts(
    task: Task,
    batchSize: number,
    batches: number,
    seed: number,
  ): Promise<Record<string, number> | null> {
    const decoder = this.#decoder;
    if (decoder === null || decoder.moeLayers().length === 0) return null;
    const valBatches = validationBatches(task, batchSize, batches) ?? [];
    const pairs = valBatches.map((b) => ({ ids: b.inputs, targets: b.targets }));
    try {
      const table = await profileSuperExperts(decoder, pairs);
      const flagged = flagSuperExperts(table);
      const isFlagged = new Set(flagged.map(({ layer, expert }) => `${layer}:${expert}`));
      const csv = await CsvWriter.create(
        join(this.dir, "super_experts.csv"),
        ["layer", "expert", "peak", "flagged"],
      );
      for (const { layer, peaks } of table.layers) {
        peaks.forEach((peak, expert) =>
          csv.write({ layer, expert, peak, flagged: isFlagged.has(`${layer}:${expert}`) ? 1 : 0 })
        );
      }
      csv.close();

      const comparison = await compareSuperExpertPruning(
        decoder,
        pairs,
        flagged,
        new Rng(seed).fork("super-experts"),
      );
      return {
        superExperts: flagged.length,
        lossAllExperts: comparison.baseLoss,
        lossSuperExpertsZeroed: comparison.superLoss,
        lossRandomExpertsZeroed: comparison.randomLoss,
      };
    } finally {
      for (const batch of valBatches) for (const tensor of batch.tensors()) tensor.dispose();
    }
  }

  close(): void {
    this.#routing?.close();
    this.#attention?.close();
    for (const tensor of this.#batch?.tensors() ?? []) tensor.dispose();
    for (const batch of this.#globalBatches) {
      for (const tensor of batch.tensors()) tensor.dispose();
    }
  }
}

/**
 * MoH head loads keyed "layer/head" (routed heads from the usage rows, shared heads 1) and DMA
 * kept fractions keyed by layer.
 */
function headColumns(
  attention: AttentionDiagnostics,
): { mohLoad: Map<string, number>; dmaKept: Map<number, number> } {
  const mohLoad = new Map<string, number>();
  for (const row of attention.mohUsage) {
    if (row.head !== undefined) mohLoad.set(`${row.layer}/${row.head}`, row.load);
  }
  // A MoH layer's heads below the first routed head are shared, so always active.
  const mohLayers = new Set(attention.mohUsage.map((row) => row.layer));
  for (const row of attention.entropy) {
    const key = `${row.layer}/${row.head}`;
    if (mohLayers.has(row.layer) && !mohLoad.has(key)) mohLoad.set(key, 1);
  }

  const dmaKept = new Map<number, number>();
  for (const row of attention.dmaKept) dmaKept.set(row.layer, row.keptFraction);
  return { mohLoad, dmaKept };
}

/** Adds the kept assignments per expert of each MoE layer's latest forward to `loads`. */
async function addLoads(loads: Map<number, Float64Array>, decoder: DecoderLM): Promise<void> {
  for (const { layer, record } of decoder.routing()) {
    const load = expertLoad(await record.keptExperts.data(), record.numExperts);
    const total = loads.get(layer) ?? new Float64Array(record.numExperts);
    for (let e = 0; e < load.length; e++) total[e] += load[e];
    loads.set(layer, total);
  }
}

/** Returns `count` fixed validation batches of a token task, or undefined for other tasks. */
function validationBatches(
  task: Task,
  batchSize: number,
  count: number,
): TokenBatch[] | undefined {
  return (task as { valBatches?: (b: number, n: number) => TokenBatch[] })
    .valBatches?.(batchSize, count);
}
