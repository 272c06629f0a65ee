/**
 * Diagnostics written every `train.probeEvery` steps on a fixed probe batch of validation data:
 *
 * - routing.csv, for models with MoE layers: one row per (step, layer, expert) with the expert's
 *   share of the layer's kept assignments (`load`), and the layer's MaxVio, coefficient of
 *   variation, dead experts, drop rate, mean router entropy, auxiliary losses and routing
 *   fluctuation since the previous probe (`fluctuation`: share of probe tokens whose top-1 expert
 *   changed; `fluctuation_topk`: whose top-K set changed), repeated on each of its expert rows.
 * - attention.csv: one row per (step, layer, head) with the attention entropy and the model's
 *   attention-sink rate (share of heads whose mean attention on the first token exceeds 0.3).
 */

import { join } from "node:path";
import { collectAttentionDiagnostics } from "../layers/attention/diagnostics.ts";
import type { DecoderLM } from "../layers/models/decoder_lm.ts";
import {
  recordedExpertSets,
  routingFluctuation,
  routingMetrics,
} from "../layers/moe/diagnostics.ts";
import { noGrad, withScope } from "../tensor/mod.ts";
import { CsvWriter } from "./csv.ts";
import { LmModel, type TokenBatch } from "./tasks/lm_model.ts";
import type { Task, TaskModel } from "./tasks/task.ts";

// Per-layer routing columns, in the order routingMetrics returns them; auxiliary losses vary by
// router, so they are written as one `aux_losses` cell of name=value pairs.
const LAYER_COLUMNS = ["max_vio", "cv", "dead_experts", "drop_rate", "router_entropy"];

/** Writes the probe CSVs of one run; `probe` is a no-op for models without what a file needs. */
export class Probes {
  readonly #decoder: DecoderLM | null;
  readonly #batch: TokenBatch | null;
  #routing: CsvWriter | null = null;
  #attention: CsvWriter | null = null;
  readonly #previousSets = new Map<number, number[][]>();

  private constructor(
    readonly dir: string,
    decoder: DecoderLM | null,
    batch: TokenBatch | null,
    readonly append: boolean,
  ) {
    this.#decoder = decoder;
    this.#batch = batch;
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
    const batches = (task as { valBatches?: (b: number, n: number) => TokenBatch[] })
      .valBatches?.(batchSize, 1);
    if (batches === undefined || batches.length === 0) return new Probes(dir, null, null, append);
    for (const tensor of batches[0].tensors()) tensor.persistent = true;
    return new Probes(dir, model.decoder, batches[0], append);
  }

  /** Runs the probe batch and appends the rows of `step`. */
  async probe(step: number): Promise<void> {
    if (this.#decoder === null || this.#batch === null) return;
    const decoder = this.#decoder;
    const ids = this.#batch.inputs;

    if (decoder.moeLayers().length > 0) {
      const forward = withScope(() => noGrad(() => decoder.forward(ids)));
      forward.dispose();
      await this.#writeRouting(step, decoder);
    }

    const attention = await collectAttentionDiagnostics(decoder, ids);
    this.#attention ??= await CsvWriter.create(
      join(this.dir, "attention.csv"),
      ["step", "layer", "head", "entropy", "sink_rate"],
      { append: this.append },
    );
    for (const row of attention.entropy) {
      this.#attention.write({
        step,
        layer: row.layer,
        head: row.head,
        entropy: row.entropy,
        sink_rate: attention.sinkRate,
      });
    }
  }

  async #writeRouting(step: number, decoder: DecoderLM): Promise<void> {
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
        ["step", "layer", "expert", "load", ...LAYER_COLUMNS, "fluctuation", "fluctuation_topk"],
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
        };
        for (const column of LAYER_COLUMNS) row[column] = metrics[column];
        this.#routing.write(row);
      }
    }
  }

  close(): void {
    this.#routing?.close();
    this.#attention?.close();
    for (const tensor of this.#batch?.tensors() ?? []) tensor.dispose();
  }
}
