/**
 * The trainer: builds the task, model and optimizer of one run, trains, evaluates, and writes the
 * run directory (config.yaml, metrics.csv, plots/loss.png, summary.json).
 *
 * One step reads nothing back from the device unless it logs: the loss and gradient norm are read
 * every `logEvery` steps, the validation loss every `evalEvery` steps and at the end.
 */

import { join } from "node:path";
import type { Backend } from "../kernels/backend.ts";
import { DecoderLM } from "../layers/models/decoder_lm.ts";
import { AdamW } from "../optim/adamw.ts";
import { globalGradNorm, zeroGrad } from "../optim/clip.ts";
import { learningRate } from "../optim/schedule.ts";
import { backward, noGrad, Rng, Tensor, withScope } from "../tensor/mod.ts";
import { configHash, type ExperimentConfig } from "./config.ts";
import { CsvWriter } from "./csv.ts";
import { RunError } from "./errors.ts";
import { plotLines } from "./plot.ts";
import { Progress } from "./progress.ts";
import { createRunDir } from "./run_dir.ts";
import { moelabVersion, type RunSummary, writeSummary } from "./summary.ts";
import { type LmTask, loadTask } from "./tasks/lm.ts";

export const METRIC_COLUMNS = [
  "step",
  "train_loss",
  "val_loss",
  "lr",
  "grad_norm",
  "tokens_per_s",
  "elapsed_s",
];

export interface TrainOptions {
  backend: Backend;
  /** The resolved config as YAML, saved as the run's config.yaml. */
  configText: string;
  /** Receives one line per event (the log); the progress line is drawn separately. */
  log?: (line: string) => void;
  /** Draws a progress line when stdout is a terminal (default true). */
  progress?: boolean;
}

export interface TrainResult {
  dir: string;
  runId: string;
  summary: RunSummary;
}

/** Trains one run to completion and returns where it was written. */
export async function train(config: ExperimentConfig, options: TrainOptions): Promise<TrainResult> {
  const { backend } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  const hash = configHash(config);
  const startedAt = new Date();
  const started = performance.now();

  const { dir, runId } = await createRunDir(config.output.dir, config.experiment, hash);
  await Deno.writeTextFile(join(dir, "config.yaml"), options.configText);
  log(`run ${runId}: moelab ${moelabVersion()}, ${backend.description}, config ${hash}`);
  log(`writing to ${dir}`);

  const task = await loadTask(config, backend);
  const rng = new Rng(config.seed);
  const model = new DecoderLM(backend, rng.fork("init"), {
    ...config.model,
    vocabSize: task.vocabSize,
    maxSeqLen: config.task.seqLen,
  });
  const optimizer = new AdamW(model.parameters(), config.optimizer);
  log(`model: ${model.parameterCount()} parameters; data: ${task.describe()}`);

  const metrics = await CsvWriter.create(join(dir, "metrics.csv"), METRIC_COLUMNS);
  const history: { step: number; trainLoss: number; valLoss: number }[] = [];
  const progress = new Progress();
  const summary: RunSummary = {
    runId,
    experiment: config.experiment,
    configHash: hash,
    version: moelabVersion(),
    backend: backend.name,
    adapter: backend.description,
    seed: config.seed,
    startedAt: startedAt.toISOString(),
    wallTimeSeconds: 0,
    steps: 0,
    status: "failed",
    finalMetrics: {},
    parameters: model.parameterCount(),
  };

  const writeLog = (line: string) => {
    progress.clear();
    log(line);
  };

  try {
    const dataRng = rng.fork("data");
    const { steps, batchSize, logEvery, evalEvery } = config.train;
    const tokensPerStep = batchSize * config.task.seqLen;
    let windowStart = performance.now();
    let windowTokens = 0;
    let lastTrainLoss = NaN;
    let lastValLoss = NaN;

    for (let step = 0; step < steps; step++) {
      const lr = learningRate(config.optimizer.lr, step, steps, config.schedule);
      const batch = task.trainBatch(dataRng, batchSize);
      const { loss, normSq } = trainStep(model, optimizer, batch, lr, config.optimizer.gradClip);
      backend.flush();
      windowTokens += tokensPerStep;
      summary.steps = step + 1;

      const isLast = step === steps - 1;
      const logNow = (step + 1) % logEvery === 0 || isLast;
      const evalNow = (step + 1) % evalEvery === 0 || isLast;
      if (logNow || evalNow) {
        const trainLoss = await loss.item();
        const gradNorm = Math.sqrt(await normSq.item());
        if (!Number.isFinite(trainLoss)) {
          throw new RunError(
            `training diverged: train loss is ${trainLoss} at step ${step + 1}; every row logged ` +
              `before it is in ${join(dir, "metrics.csv")}. Lower optimizer.lr (now ` +
              `${config.optimizer.lr}) or enable optimizer.gradClip.`,
          );
        }
        const now = performance.now();
        const tokensPerSecond = windowTokens / ((now - windowStart) / 1000);
        windowStart = now;
        windowTokens = 0;
        lastTrainLoss = trainLoss;

        const valLoss = evalNow ? await evaluate(model, task, config) : NaN;
        if (evalNow) lastValLoss = valLoss;
        metrics.write({
          step: step + 1,
          train_loss: trainLoss,
          val_loss: evalNow ? valLoss : "",
          lr,
          grad_norm: gradNorm,
          tokens_per_s: Math.round(tokensPerSecond),
          elapsed_s: round((now - started) / 1000, 2),
        });
        history.push({ step: step + 1, trainLoss, valLoss });
        writeLog(
          `step ${step + 1}/${steps} loss ${trainLoss.toFixed(4)}` +
            (evalNow ? ` val ${valLoss.toFixed(4)}` : "") +
            ` lr ${lr.toExponential(2)} gnorm ${gradNorm.toFixed(3)} tok/s ${
              Math.round(tokensPerSecond)
            }`,
        );
        // The step after an evaluation must not count the evaluation's time.
        if (evalNow) windowStart = performance.now();
      }
      loss.dispose();
      normSq.dispose();
      if (options.progress ?? true) {
        progress.update(
          step + 1,
          steps,
          `loss ${Number.isNaN(lastTrainLoss) ? "-" : lastTrainLoss.toFixed(3)}`,
        );
      }
    }
    progress.done();

    summary.status = "completed";
    summary.finalMetrics = {
      trainLoss: lastTrainLoss,
      valLoss: lastValLoss,
      valBitsPerByte: lastValLoss / Math.LN2,
    };
  } catch (error) {
    progress.clear();
    summary.error = error instanceof Error ? error.message : String(error);
    throw error;
  } finally {
    metrics.close();
    summary.wallTimeSeconds = round((performance.now() - started) / 1000, 2);
    await writeLossPlot(join(dir, "plots", "loss.png"), history, config.experiment);
    await writeSummary(dir, summary);
    optimizer.dispose();
    model.dispose();
  }

  log(
    `done in ${summary.wallTimeSeconds}s: val loss ${
      summary.finalMetrics.valLoss.toFixed(4)
    } nats/byte ` +
      `(${summary.finalMetrics.valBitsPerByte.toFixed(3)} bits/byte); results in ${dir}`,
  );
  return { dir, runId, summary };
}

/**
 * One optimizer step: forward, backward, clipping and the AdamW update, inside a scope that
 * returns every intermediate buffer to the pool. Returns the loss and the squared gradient norm,
 * still on the device.
 */
export function trainStep(
  model: DecoderLM,
  optimizer: AdamW,
  batch: { inputs: Tensor; targets: Tensor },
  lr: number,
  gradClip: number,
): { loss: Tensor; normSq: Tensor } {
  const params = [...model.parameters().values()];
  const result = withScope(() => {
    const loss = model.loss(batch.inputs, batch.targets);
    backward(loss);
    const { normSq, coefficient } = globalGradNorm(params, gradClip > 0 ? gradClip : Infinity);
    optimizer.update(lr, gradClip > 0 ? coefficient : null);
    return { loss: loss.detach(), normSq };
  });
  batch.inputs.dispose();
  batch.targets.dispose();
  zeroGrad(params);
  return result;
}

/** Mean validation loss over the task's fixed validation batches. */
export async function evaluate(
  model: DecoderLM,
  task: LmTask,
  config: ExperimentConfig,
): Promise<number> {
  let total = 0;
  const batches = task.valBatches(config.train.batchSize, config.train.evalBatches);
  for (const batch of batches) {
    const loss = withScope(() => noGrad(() => model.loss(batch.inputs, batch.targets)));
    total += await loss.item();
    loss.dispose();
    batch.inputs.dispose();
    batch.targets.dispose();
  }
  return total / batches.length;
}

async function writeLossPlot(
  path: string,
  history: { step: number; trainLoss: number; valLoss: number }[],
  experiment: string,
): Promise<void> {
  await plotLines(path, {
    title: `${experiment}: loss`,
    xLabel: "step",
    yLabel: "loss (nats per byte)",
    series: [
      { label: "train", points: history.map((h) => ({ x: h.step, y: h.trainLoss })) },
      {
        label: "validation",
        points: history.filter((h) => !Number.isNaN(h.valLoss)).map((h) => ({
          x: h.step,
          y: h.valLoss,
        })),
      },
    ],
  });
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
