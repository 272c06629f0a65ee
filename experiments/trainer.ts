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
import { describeGroups } from "../optim/groups.ts";
import { Rng } from "../tensor/mod.ts";
import { saveCheckpoint } from "./checkpoint/checkpoint.ts";
import { configHash, type ExperimentConfig } from "./config.ts";
import { CsvWriter } from "./csv.ts";
import { RunError } from "./errors.ts";
import { plotLines } from "./plot.ts";
import { Probes } from "./probes.ts";
import { Progress } from "./progress.ts";
import { optimizers, type SavedTaskState, schedules, tasks } from "./registry.ts";
import { restoreLatest, truncateMetrics } from "./resume.ts";
import { createNamedRunDir, createRunDir } from "./run_dir.ts";
import { moelabVersion, type RunSummary, writeSummary } from "./summary.ts";
import type { Task } from "./tasks/task.ts";
import { trainStep } from "./train_step.ts";

export { trainStep } from "./train_step.ts";

/** The metrics.csv columns of the language-modelling task, the default. */
export const METRIC_COLUMNS = metricColumns("lm");

/**
 * The metrics.csv columns of a registered task: step, train loss, one `val_<metric>` per metric
 * its evaluation returns, learning rate, gradient norm, throughput and elapsed seconds.
 */
export function metricColumns(taskName: string): string[] {
  const entry = tasks.get(taskName);
  return [
    "step",
    "train_loss",
    ...(entry.metrics ?? ["loss"]).map(validationColumn),
    "lr",
    "grad_norm",
    `${entry.unit ?? "samples"}_per_s`,
    "elapsed_s",
  ];
}

/** `bitsPerByte` → `val_bits_per_byte`. */
export function validationColumn(metric: string): string {
  return `val_${metric.replace(/[A-Z0-9]+/g, (m) => `_${m.toLowerCase()}`)}`;
}

const TOKENIZER_FILE = "tokenizer.json";

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

  // The task, model and optimizer are built before the run directory, so input that fails
  // there (a missing corpus, attention options that do not fit) leaves no directory behind.
  const saved: SavedTaskState = {};
  if (options.resume !== undefined) {
    try {
      saved.tokenizer = JSON.parse(
        await Deno.readTextFile(join(options.resume.dir, TOKENIZER_FILE)),
      );
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  const taskEntry = tasks.get(config.task.name);
  const task: Task = await taskEntry.create(config, backend, saved);

  const rng = new Rng(config.seed);
  const model = task.createModel(backend, rng.fork("init"));
  const parameters = model.parameters();
  const { optimizer, warnings } = optimizers.get(config.optimizer.name).create(
    parameters,
    config.optimizer,
  );
  const schedule = schedules.get(config.schedule.name).create(config.schedule);

  const { dir, runId } = options.resume !== undefined
    ? { dir: options.resume.dir, runId: basename(options.resume.dir) }
    : options.runDir !== undefined
    ? await createNamedRunDir(options.runDir)
    : await createRunDir(config.output.dir, config.experiment, hash);
  if (options.resume === undefined) {
    await Deno.writeTextFile(join(dir, "config.yaml"), options.configText);
    const tokenizer = (task as { tokenizerJson?: () => unknown }).tokenizerJson?.();
    if (tokenizer) {
      await Deno.writeTextFile(join(dir, TOKENIZER_FILE), JSON.stringify(tokenizer) + "\n");
    }
  }
  log(`run ${runId}: moelab ${moelabVersion()}, ${backend.description}, config ${hash}`);
  log(`writing to ${dir}`);
  for (const warning of warnings) log(`warning: ${warning}`);
  const warmupWarning = checkWarmup(config.schedule, config.train.steps);
  if (warmupWarning !== null) log(`warning: ${warmupWarning}`);
  for (const line of describeGroups(optimizer.groups, parameters)) log(line);
  log(`model: ${model.parameterCount()} parameters; data: ${task.describe()}`);

  const columns = metricColumns(config.task.name);
  const metricNames = taskEntry.metrics ?? ["loss"];
  const rankColumn = validationColumn(metricNames[0]);
  const throughputColumn = columns[columns.length - 2];

  let dataRng = rng.fork("data");
  let startStep = 0;
  const history: HistoryRow[] = [];
  const metricsPath = join(dir, "metrics.csv");
  if (options.resume !== undefined) {
    const { state, warning } = await restoreLatest(
      dir,
      hash,
      new Map([...parameters, ...model.buffers()]),
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
        valLoss: row[rankColumn] === "" ? NaN : Number(row[rankColumn]),
      });
    }
    log(`resuming at step ${startStep} from ${join(dir, "checkpoints", `step-${startStep}`)}`);
  }

  const metrics = await CsvWriter.create(metricsPath, columns, {
    append: options.resume !== undefined,
  });
  const progress = new Progress();
  const probes = config.train.probeEvery > 0 || config.train.superExperts
    ? Probes.create(dir, task, model, config.train.batchSize, options.resume !== undefined)
    : null;
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
      // Buffers (an aux-free router's bias) are read now: they are replaced every step.
      weights: new Map([...parameters, ...model.buffers()]),
      optimizer: optimizer.stateTensors(),
      state: { configHash: hash, dataRng: dataRng.state() },
    }, config.train.keepCheckpoints);
  };

  try {
    const { steps, batchSize, logEvery, evalEvery, checkpointEvery } = config.train;
    let windowStart = performance.now();
    let windowUnits = 0;
    let lastTrainLoss = history.at(-1)?.trainLoss ?? NaN;
    let lastValidation: Record<string, number> = {};

    for (let step = startStep; step < steps; step++) {
      const factor = schedule(step, steps);
      const lr = config.optimizer.lr * factor;
      const batch = task.trainBatch(dataRng, batchSize);
      windowUnits += batch.units;
      model.setStep?.(step, steps);
      const { loss, normSq } = trainStep(
        model,
        optimizer,
        batch,
        factor,
        config.optimizer.gradClip,
      );
      backend.flush();
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
        const throughput = windowUnits / ((now - windowStart) / 1000);
        windowUnits = 0;
        lastTrainLoss = trainLoss;

        const validation: Record<string, number> = evalNow
          ? await task.evaluate(model, batchSize, config.train.evalBatches)
          : {};
        if (evalNow) lastValidation = validation;
        const row: Record<string, number | string> = {
          step: step + 1,
          train_loss: trainLoss,
          lr,
          grad_norm: gradNorm,
          [throughputColumn]: Math.round(throughput),
          elapsed_s: round((now - started) / 1000, 2),
        };
        for (const name of metricNames) {
          row[validationColumn(name)] = evalNow ? validation[name] : "";
        }
        metrics.write(row);
        const rankValue = evalNow ? validation[metricNames[0]] : NaN;
        history.push({ step: step + 1, trainLoss, valLoss: rankValue });
        writeLog(
          `step ${step + 1}/${steps} loss ${trainLoss.toFixed(4)}` +
            (evalNow ? ` val ${metricNames[0]} ${rankValue.toFixed(4)}` : "") +
            ` lr ${lr.toExponential(2)} gnorm ${gradNorm.toFixed(3)}` +
            ` ${task.unitName}/s ${Math.round(throughput)}`,
        );
        // The next window starts after the evaluation and logging, so they do not count.
        windowStart = performance.now();
        // Yield to the event loop, so a pending Ctrl-C reaches its listener.
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      loss.dispose();
      normSq.dispose();
      const probeEvery = config.train.probeEvery;
      if (probes !== null && probeEvery > 0 && ((step + 1) % probeEvery === 0 || isLast)) {
        await probes.probe(step + 1);
      }

      if (checkpointEvery > 0 && (step + 1) % checkpointEvery === 0 && !isLast) {
        await checkpoint(step + 1);
      }
      if (options.signal?.aborted && !isLast) {
        await checkpoint(step + 1);
        throw new RunError(
          `interrupted after step ${step + 1}; a checkpoint is in ${dir}/checkpoints; continue ` +
            `with: deno task run ${join(dir, "config.yaml")} --resume ${dir} (a plan continues ` +
            `its unfinished runs when run again)`,
        );
      }
      if (options.progress ?? true) {
        const shown = Number.isNaN(lastTrainLoss) ? "-" : lastTrainLoss.toFixed(3);
        progress.update(step + 1, steps, `loss ${shown}`);
      }
    }
    progress.done();
    await checkpoint(steps);
    if (config.train.superExperts && probes !== null) {
      const pruning = await probes.profileSuperExperts(
        task,
        batchSize,
        config.train.evalBatches,
        config.seed,
      );
      if (pruning !== null) {
        summary.superExperts = pruning;
        log(
          `super experts: ${pruning.superExperts} flagged; validation loss ` +
            `${pruning.lossAllExperts.toFixed(4)} with all experts, ` +
            `${pruning.lossSuperExpertsZeroed.toFixed(4)} with them zeroed, ` +
            `${pruning.lossRandomExpertsZeroed.toFixed(4)} with as many random experts zeroed`,
        );
      }
    }

    summary.status = "completed";
    summary.finalMetrics = { trainLoss: lastTrainLoss };
    for (const name of metricNames) {
      summary.finalMetrics[summaryKey(name)] = lastValidation[name];
    }
  } catch (error) {
    progress.clear();
    summary.error = error instanceof Error ? error.message : String(error);
    throw error;
  } finally {
    metrics.close();
    probes?.close();
    summary.wallTimeSeconds = round((performance.now() - started) / 1000, 2);
    await writeLossPlot(join(dir, "plots", "loss.png"), history, config.experiment, metricNames[0]);
    await writeSummary(dir, summary);
    optimizer.dispose();
    model.dispose();
  }

  const finals = metricNames.map((name) => `${name} ${lastValidationOf(summary, name).toFixed(4)}`);
  log(`done in ${summary.wallTimeSeconds}s: validation ${finals.join(", ")}; results in ${dir}`);
  return { dir, runId, summary };
}

/** `bitsPerByte` → `valBitsPerByte`, the key of a validation metric in summary.json. */
function summaryKey(metric: string): string {
  return `val${metric[0].toUpperCase()}${metric.slice(1)}`;
}

function lastValidationOf(summary: RunSummary, name: string): number {
  return summary.finalMetrics[summaryKey(name)] ?? NaN;
}

async function writeLossPlot(
  path: string,
  history: HistoryRow[],
  experiment: string,
  validationMetric: string,
): Promise<void> {
  await plotLines(path, {
    title: `${experiment}: loss`,
    xLabel: "step",
    yLabel: "loss",
    series: [
      { label: "train loss", points: history.map((h) => ({ x: h.step, y: h.trainLoss })) },
      {
        label: `validation ${validationMetric}`,
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

/** Returns a warning when the schedule's warm-up covers the whole run, so the rate never decays. */
export function checkWarmup(schedule: unknown, steps: number): string | null {
  const warmupSteps = (schedule as { warmupSteps?: unknown }).warmupSteps;
  if (typeof warmupSteps !== "number" || warmupSteps < steps) return null;
  return `schedule.warmupSteps is ${warmupSteps} but train.steps is ${steps}, so the whole run ` +
    "is warm-up and the learning rate never decays; set schedule.warmupSteps below train.steps";
}
