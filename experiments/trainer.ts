/**
 * The trainer: builds the task, model and optimizer of one run, trains, evaluates, checkpoints,
 * and writes the run directory (config.yaml, metrics.csv, plots/loss.png, checkpoints/,
 * summary.json). A run continues from its newest checkpoint with `resume`.
 *
 * One step reads nothing back from the device unless it logs: the loss and gradient norm are read
 * every `logEvery` steps, the validation loss every `evalEvery` steps and at the end.
 */

import { basename, join } from "node:path";
import type { Backend } from "../kernels/backend.ts";
import { DecoderLM } from "../layers/models/decoder_lm.ts";
import { describeGroups } from "../optim/groups.ts";
import { Rng } from "../tensor/mod.ts";
import { saveCheckpoint } from "./checkpoint/checkpoint.ts";
import { configHash, type ExperimentConfig } from "./config.ts";
import { CsvWriter } from "./csv.ts";
import { RunError } from "./errors.ts";
import { plotLines } from "./plot.ts";
import { Progress } from "./progress.ts";
import { optimizers, schedules } from "./registry.ts";
import { restoreLatest, truncateMetrics } from "./resume.ts";
import { createNamedRunDir, createRunDir } from "./run_dir.ts";
import { moelabVersion, type RunSummary, writeSummary } from "./summary.ts";
import { loadTask } from "./tasks/lm.ts";
import { evaluate, trainStep } from "./train_step.ts";

export { evaluate, trainStep } from "./train_step.ts";

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
  /**
   * The run directory to create and write, which must not exist yet (default: a new timestamped
   * directory under output.dir/experiment). Its name becomes the run id.
   */
  runDir?: string;
  /** Continue the run in this existing directory from its newest checkpoint. */
  resume?: { dir: string; force?: boolean };
  /**
   * Stops training when aborted: the current step finishes, a checkpoint is written, and `train`
   * rejects with a `RunError` saying where the run can resume.
   */
  signal?: AbortSignal;
}

export interface TrainResult {
  dir: string;
  runId: string;
  summary: RunSummary;
}

interface HistoryRow {
  step: number;
  trainLoss: number;
  valLoss: number;
}

/** Trains one run to completion (or to its abort) and returns where it was written. */
export async function train(config: ExperimentConfig, options: TrainOptions): Promise<TrainResult> {
  const { backend } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  const hash = configHash(config);
  const started = performance.now();

  const { dir, runId } = options.resume !== undefined
    ? { dir: options.resume.dir, runId: basename(options.resume.dir) }
    : options.runDir !== undefined
    ? await createNamedRunDir(options.runDir)
    : await createRunDir(config.output.dir, config.experiment, hash);
  if (options.resume === undefined) {
    await Deno.writeTextFile(join(dir, "config.yaml"), options.configText);
  }
  log(`run ${runId}: moelab ${moelabVersion()}, ${backend.description}, config ${hash}`);
  log(`writing to ${dir}`);

  const task = await loadTask(config, backend);
  const rng = new Rng(config.seed);
  const model = new DecoderLM(backend, rng.fork("init"), {
    ...config.model,
    vocabSize: task.vocabSize,
    maxSeqLen: config.task.seqLen,
  });
  const parameters = model.parameters();
  const { optimizer, warnings } = optimizers.get(config.optimizer.name).create(
    parameters,
    config.optimizer,
  );
  const schedule = schedules.get(config.schedule.name).create(config.schedule);
  for (const warning of warnings) log(`warning: ${warning}`);
  for (const line of describeGroups(optimizer.groups, parameters)) log(line);
  log(`model: ${model.parameterCount()} parameters; data: ${task.describe()}`);

  let dataRng = rng.fork("data");
  let startStep = 0;
  const history: HistoryRow[] = [];
  const metricsPath = join(dir, "metrics.csv");
  if (options.resume !== undefined) {
    const { state, warning } = await restoreLatest(
      dir,
      hash,
      parameters,
      optimizer,
      options.resume.force ?? false,
    );
    if (warning !== null) log(`warning: ${warning}`);
    startStep = state.step;
    dataRng = Rng.fromState(state.dataRng);
    for (const row of await truncateMetrics(metricsPath, startStep)) {
      history.push({
        step: Number(row.step),
        trainLoss: Number(row.train_loss),
        valLoss: row.val_loss === "" ? NaN : Number(row.val_loss),
      });
    }
    log(`resuming at step ${startStep} from ${join(dir, "checkpoints", `step-${startStep}`)}`);
  }

  const metrics = await CsvWriter.create(metricsPath, METRIC_COLUMNS, {
    append: options.resume !== undefined,
  });
  const progress = new Progress();
  const summary: RunSummary = {
    runId,
    experiment: config.experiment,
    configHash: hash,
    version: moelabVersion(),
    backend: backend.name,
    adapter: backend.description,
    seed: config.seed,
    startedAt: new Date().toISOString(),
    wallTimeSeconds: 0,
    steps: startStep,
    status: "failed",
    finalMetrics: {},
    parameters: model.parameterCount(),
  };
  const writeLog = (line: string) => {
    progress.clear();
    log(line);
  };
  const checkpoint = async (step: number) => {
    await saveCheckpoint(dir, step, {
      weights: parameters,
      optimizer: optimizer.stateTensors(),
      state: { configHash: hash, dataRng: dataRng.state() },
    }, config.train.keepCheckpoints);
  };

  try {
    const { steps, batchSize, logEvery, evalEvery, checkpointEvery } = config.train;
    const tokensPerStep = batchSize * config.task.seqLen;
    let windowStart = performance.now();
    let windowTokens = 0;
    let lastTrainLoss = history.at(-1)?.trainLoss ?? NaN;
    let lastValLoss = NaN;

    for (let step = startStep; step < steps; step++) {
      const factor = schedule(step, steps);
      const lr = config.optimizer.lr * factor;
      const batch = task.trainBatch(dataRng, batchSize);
      const { loss, normSq } = trainStep(
        model,
        optimizer,
        batch,
        factor,
        config.optimizer.gradClip,
      );
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
              `before it is in ${metricsPath}. Lower optimizer.lr (now ` +
              `${config.optimizer.lr}) or enable optimizer.gradClip.`,
          );
        }
        const now = performance.now();
        const tokensPerSecond = windowTokens / ((now - windowStart) / 1000);
        windowTokens = 0;
        lastTrainLoss = trainLoss;

        const valLoss = evalNow
          ? await evaluate(model, task, batchSize, config.train.evalBatches)
          : NaN;
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
            ` lr ${lr.toExponential(2)} gnorm ${gradNorm.toFixed(3)}` +
            ` tok/s ${Math.round(tokensPerSecond)}`,
        );
        // The next window starts after the evaluation and logging, so they do not count.
        windowStart = performance.now();
        // Yield to the event loop, so a pending Ctrl-C reaches its listener.
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      loss.dispose();
      normSq.dispose();

      if (checkpointEvery > 0 && (step + 1) % checkpointEvery === 0 && !isLast) {
        await checkpoint(step + 1);
      }
      if (options.signal?.aborted && !isLast) {
        await checkpoint(step + 1);
        throw new RunError(
          `interrupted after step ${step + 1}; a checkpoint is in ${dir}/checkpoints; continue ` +
            `with --resume ${dir}`,
        );
      }
      if (options.progress ?? true) {
        const shown = Number.isNaN(lastTrainLoss) ? "-" : lastTrainLoss.toFixed(3);
        progress.update(step + 1, steps, `loss ${shown}`);
      }
    }
    progress.done();
    await checkpoint(steps);

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

async function writeLossPlot(
  path: string,
  history: HistoryRow[],
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
