/**
 * The forecasting task: predict the next `horizon` steps of every column of a multivariate series
 * from the previous `lookback` steps.
 *
 * The series is split chronologically into training, validation and test rows (the last
 * `testFraction` is test data, the `valFraction` before it validation data). Each column is
 * normalised with the mean and standard deviation of the training rows only, and every window, its
 * lookback and its horizon, lies inside one split, so no validation or test value is seen in
 * training. MSE and MAE are reported on the normalised scale, as in the ETT benchmarks.
 */

import { z } from "zod";
import type { Backend } from "../../kernels/backend.ts";
import { Mlp } from "../../layers/mlp.ts";
import { type FeedForwardFactory, Forecaster } from "../../layers/models/forecaster.ts";
import { Module } from "../../layers/module.ts";
import { MoeFeedForward } from "../../layers/moe/feed_forward.ts";
import { moeLayerIndices } from "../../layers/moe/spec.ts";
import { add, noGrad, type Rng, Tensor, withScope } from "../../tensor/mod.ts";
import {
  loadSeriesCsv,
  loadVegaSeries,
  type TimeSeries,
  VEGA_SERIES,
  type VegaSeriesName,
} from "../data/csv_series.ts";
import { UserError } from "../errors.ts";
import type { ModelSection } from "./lm_model.ts";
import type { Batch, Task, TaskModel } from "./task.ts";

/** Options of the `forecast` task. */
export const ForecastTaskOptions = z.strictObject({
  dataset: z.enum(["seattle-weather-hourly", "seattle-weather", "sp500", "path"])
    .default("seattle-weather-hourly"),
  // The CSV file read when dataset is "path": a date column, then numeric columns.
  path: z.string().default(""),
  // Value columns by header name; empty means the dataset's default columns (for a path, every
  // column after the date).
  columns: z.array(z.string().min(1)).default([]),
  // Time steps the model reads; a multiple of patchLen.
  lookback: z.int().min(1).default(96),
  // Time steps the model predicts.
  horizon: z.int().min(1).default(24),
  // Time steps per patch of the forecaster's input embedding.
  patchLen: z.int().min(1).default(16),
  // Chronological splits: the last testFraction of rows is test data, the valFraction before it
  // validation data, the rest training data.
  valFraction: z.number().gt(0).lt(1).default(0.1),
  testFraction: z.number().min(0).lt(1).default(0.2),
});

export type ForecastTaskConfig = z.output<typeof ForecastTaskOptions>;

export type ForecastSplit = "train" | "validation" | "test";

/** Lookback and horizon windows on the host, row-major. */
export interface ForecastWindows {
  /** [batchSize, lookback, channels] */
  inputs: Float32Array;
  /** [batchSize, horizon, channels] */
  targets: Float32Array;
  /** The row where each window's lookback starts. */
  starts: number[];
}

/** A normalised series split into chronological row ranges, and its windows. */
export class ForecastData {
  readonly channels: number;
  /** Row ranges [start, end) of each split. */
  readonly splits: Record<ForecastSplit, { start: number; end: number }>;
  /** Per-column mean and standard deviation of the training rows. */
  readonly mean: Float64Array;
  readonly std: Float64Array;
  /** The series after normalisation, rows × channels. */
  readonly normalized: Float64Array;

  constructor(
    readonly series: TimeSeries,
    readonly options: Pick<
      ForecastTaskConfig,
      "lookback" | "horizon" | "valFraction" | "testFraction"
    >,
  ) {
    const { lookback, horizon, valFraction, testFraction } = options;
    const { rows } = series;
    this.channels = series.columns.length;

    if (lookback >= rows) {
      throw new UserError(
        `task.lookback is ${lookback} but the series ${series.source} has only ${rows} rows; ` +
          `choose a lookback well below ${rows}`,
      );
    }
    if (valFraction + testFraction >= 1) {
      throw new UserError(
        `task.valFraction ${valFraction} + task.testFraction ${testFraction} leave no training ` +
          `rows; choose fractions that sum to less than 1`,
      );
    }

    const testRows = Math.floor(rows * testFraction);
    const validationRows = Math.floor(rows * valFraction);
    const trainEnd = rows - testRows - validationRows;
    this.splits = {
      train: { start: 0, end: trainEnd },
      validation: { start: trainEnd, end: trainEnd + validationRows },
      test: { start: trainEnd + validationRows, end: rows },
    };
    const windowRows = lookback + horizon;
    for (const split of ["train", "validation", "test"] as const) {
      const { start, end } = this.splits[split];
      if (split === "test" && testFraction === 0) continue;
      if (end - start < windowRows) {
        throw new UserError(
          `task.lookback + task.horizon is ${windowRows} rows but the ${split} split of ` +
            `${series.source} has ${end - start}; shorten lookback or horizon, or enlarge the ` +
            `split's fraction`,
        );
      }
    }

    ({ mean: this.mean, std: this.std } = columnStats(series.values, this.channels, trainEnd));
    this.normalized = new Float64Array(series.values.length);
    for (let i = 0; i < series.values.length; i++) {
      const c = i % this.channels;
      this.normalized[i] = (series.values[i] - this.mean[c]) / this.std[c];
    }
  }

  /** Counts the distinct windows of a split. */
  windowCount(split: ForecastSplit): number {
    const { start, end } = this.splits[split];
    return Math.max(0, end - start - this.options.lookback - this.options.horizon + 1);
  }

  /** `batchSize` windows drawn uniformly from the training split. */
  trainWindows(rng: Rng, batchSize: number): ForecastWindows {
    const count = this.windowCount("train");
    const starts = Array.from({ length: batchSize }, () => rng.int(count));
    return this.windows(starts);
  }

  /**
   * `batchSize * batches` windows of a split with evenly spaced starts from its first to its last
   * window, the same on every call, cut into batches.
   */
  fixedWindows(split: ForecastSplit, batchSize: number, batches: number): ForecastWindows[] {
    const { start } = this.splits[split];
    const lastStart = this.windowCount(split) - 1;
    if (lastStart < 0) throw new UserError(`the ${split} split has no windows; raise its fraction`);
    const total = batchSize * batches;
    const out: ForecastWindows[] = [];
    for (let b = 0; b < batches; b++) {
      const starts = Array.from({ length: batchSize }, (_, row) => {
        const window = b * batchSize + row;
        return start + (total > 1 ? Math.floor((window * lastStart) / (total - 1)) : 0);
      });
      out.push(this.windows(starts));
    }
    return out;
  }

  /** Copies the windows whose lookback starts at each row of `starts`. */
  windows(starts: number[]): ForecastWindows {
    const { lookback, horizon } = this.options;
    const c = this.channels;
    const inputs = new Float32Array(starts.length * lookback * c);
    const targets = new Float32Array(starts.length * horizon * c);
    starts.forEach((start, row) => {
      const lookbackEnd = (start + lookback) * c;
      inputs.set(this.normalized.subarray(start * c, lookbackEnd), row * lookback * c);
      targets.set(
        this.normalized.subarray(lookbackEnd, lookbackEnd + horizon * c),
        row * horizon * c,
      );
    });
    return { inputs, targets, starts };
  }
}

/** Per-column mean and standard deviation (population) of the first `rows` rows. */
function columnStats(
  values: Float64Array,
  channels: number,
  rows: number,
): { mean: Float64Array; std: Float64Array } {
  const mean = new Float64Array(channels);
  const std = new Float64Array(channels);
  for (let i = 0; i < rows * channels; i++) mean[i % channels] += values[i] / rows;
  for (let i = 0; i < rows * channels; i++) {
    const d = values[i] - mean[i % channels];
    std[i % channels] += (d * d) / rows;
  }
  for (let c = 0; c < channels; c++) {
    // A constant column would divide by zero; leaving it unscaled maps it to zeros.
    std[c] = std[c] > 0 ? Math.sqrt(std[c]) : 1;
  }
  return { mean, std };
}

/** Lookback windows and horizons on the device. */
export interface ForecastBatch extends Batch {
  /** f32 [batch, lookback, channels] */
  readonly inputs: Tensor;
  /** f32 [batch, horizon, channels] */
  readonly targets: Tensor;
}

/**
 * The feed-forward factory of an encoder (forecaster or ViT) for the config's model section: an
 * MoE layer in each block that `model.moe.layers` selects and the configured MLP elsewhere, or no
 * factory without `model.moe`. `created` collects the MoE layers as the model builds them, in
 * block order, so the task model can take their auxiliary losses and run their step hooks.
 */
export function encoderFeedForward(
  model: ModelSection,
): { ffn: FeedForwardFactory | undefined; created: MoeFeedForward[] } {
  const moe = model.moe;
  const created: MoeFeedForward[] = [];
  if (moe === undefined) return { ffn: undefined, created };

  const moeBlocks = new Set(moeLayerIndices(moe.layers, model.numLayers));
  const ffn: FeedForwardFactory = (backend, rng, layer, sizes) => {
    if (!moeBlocks.has(layer)) return new Mlp(backend, rng, { ...sizes, kind: model.mlp });
    const feedForward = new MoeFeedForward(backend, rng, moe, sizes, {
      layerIndex: layer,
      numLayers: model.numLayers,
    });
    created.push(feedForward);
    return feedForward;
  };
  return { ffn, created };
}

/** A `Forecaster` whose loss (MSE) reads a `ForecastBatch`. */
export class ForecastModel extends Module implements TaskModel<ForecastBatch> {
  constructor(readonly forecaster: Forecaster) {
    super();
  }

  override parameters(prefix = ""): Map<string, Tensor> {
    return this.forecaster.parameters(prefix);
  }

  override buffers(prefix = ""): Map<string, Tensor> {
    return this.forecaster.buffers(prefix);
  }

  /**
   * MSE, plus the weighted auxiliary losses of the MoE layers and of the attention layers (MoH's
   * head load balance) when the model has any.
   */
  loss(batch: ForecastBatch): Tensor {
    let loss = this.forecaster.loss(batch.inputs, batch.targets);
    const attentionAux = this.forecaster.attentionAuxLoss();
    if (attentionAux !== null) loss = add(loss, attentionAux);
    for (const layer of this.moeLayers) {
      const aux = layer.takeAuxLoss();
      if (aux !== null) loss = add(loss, aux);
    }
    return loss;
  }

  /** The MoE feed-forward layers that replaced block MLPs, in block order. */
  readonly moeLayers: MoeFeedForward[] = [];

  afterStep(): void {
    for (const layer of this.moeLayers) layer.moe.afterStep();
  }

  setStep(step: number, totalSteps: number): void {
    for (const layer of this.moeLayers) layer.moe.setStep(step, totalSteps);
  }

  override dispose(): void {
    this.forecaster.dispose();
  }
}

/** The `forecast` task: a patch transformer forecaster scored by MSE and MAE. */
export class ForecastTask implements Task<ForecastBatch> {
  readonly name = "forecast";
  readonly unitName = "samples";

  constructor(
    readonly backend: Backend,
    readonly data: ForecastData,
    readonly options: ForecastTaskConfig,
    readonly model?: ModelSection,
  ) {
    if (options.lookback % options.patchLen !== 0) {
      throw new UserError(
        `task.lookback is ${options.lookback} but task.patchLen is ${options.patchLen}; choose a ` +
          `lookback that is a multiple of patchLen`,
      );
    }
  }

  describe(): string {
    const { splits, series } = this.data;
    const rows = (split: ForecastSplit) => splits[split].end - splits[split].start;
    return `${series.source}, ${this.data.channels} columns (${series.columns.join(", ")}); ` +
      `${rows("train")} training, ${rows("validation")} validation and ${
        rows("test")
      } test rows; ` +
      `lookback ${this.options.lookback}, horizon ${this.options.horizon}`;
  }

  createModel(backend: Backend, rng: Rng): ForecastModel {
    if (this.model === undefined) {
      throw new Error(
        "ForecastTask.createModel needs the model section; pass it to createForecastTask",
      );
    }
    const { lookback, horizon, patchLen } = this.options;
    // With a model.moe section the chosen blocks get an MoE layer in place of their MLP, which
    // is how segment routing (Seg-MoE) runs on the forecaster.
    const { ffn, created } = encoderFeedForward(this.model);
    const model = new ForecastModel(
      new Forecaster(backend, rng, { ...this.model, lookback, horizon, patchLen, ffn }),
    );
    model.moeLayers.push(...created);
    return model;
  }

  trainBatch(rng: Rng, batchSize: number): ForecastBatch {
    return this.#upload(this.data.trainWindows(rng, batchSize));
  }

  /**
   * Returns `mse` and `mae` on the normalised scale over `batches` fixed batches of the
   * validation split (or of the test split).
   */
  async evaluate(
    model: TaskModel<ForecastBatch>,
    batchSize: number,
    batches: number,
    split: "validation" | "test" = "validation",
  ): Promise<Record<string, number>> {
    if (!(model instanceof ForecastModel)) {
      throw new Error("the forecast task evaluates a ForecastModel from its createModel");
    }
    let squared = 0;
    let absolute = 0;
    let count = 0;
    for (const windows of this.data.fixedWindows(split, batchSize, batches)) {
      const batch = this.#upload(windows);
      const forecast = withScope(() => noGrad(() => model.forecaster.forward(batch.inputs)));
      const predicted = await forecast.data();
      forecast.dispose();
      for (const t of batch.tensors()) t.dispose();
      for (let i = 0; i < predicted.length; i++) {
        const error = predicted[i] - windows.targets[i];
        squared += error * error;
        absolute += Math.abs(error);
      }
      count += predicted.length;
    }
    return { mse: squared / count, mae: absolute / count };
  }

  #upload(windows: ForecastWindows): ForecastBatch {
    const { lookback, horizon } = this.options;
    const batchSize = windows.starts.length;
    const channels = this.data.channels;
    const batch = {
      inputs: Tensor.fromArray(
        this.backend,
        windows.inputs,
        [batchSize, lookback, channels],
        "f32",
      ),
      targets: Tensor.fromArray(
        this.backend,
        windows.targets,
        [batchSize, horizon, channels],
        "f32",
      ),
      units: batchSize,
      tensors: () => [batch.inputs, batch.targets],
    };
    return batch;
  }
}

/** Reads the series named in `options`; throws `UserError` for a missing package or path. */
export async function loadForecastSeries(options: ForecastTaskConfig): Promise<TimeSeries> {
  if (options.dataset !== "path") {
    return await loadVegaSeries(options.dataset as VegaSeriesName, options.columns);
  }
  if (options.path === "") {
    throw new UserError(
      `task.dataset is "path" but task.path is empty; set task.path to a CSV file with a date ` +
        `column and numeric columns, or choose one of ${Object.keys(VEGA_SERIES).join(", ")}`,
    );
  }
  return await loadSeriesCsv(options.path, options.columns);
}

/** Reads the series, splits and normalises it, and builds the task. */
export async function createForecastTask(
  backend: Backend,
  options: z.input<typeof ForecastTaskOptions>,
  model?: ModelSection,
): Promise<ForecastTask> {
  const parsed = ForecastTaskOptions.parse(options);
  const series = await loadForecastSeries(parsed);
  return new ForecastTask(backend, new ForecastData(series, parsed), parsed, model);
}
