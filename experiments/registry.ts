/**
 * Name registries for the pluggable parts of an experiment: tasks, optimizers, learning-rate
 * schedules, routers and attention variants.
 *
 * Each entry registers a name, a one-line summary, a strict zod object schema for its options
 * (every option with a default) and a factory. The config schema is rebuilt from the registries
 * whenever one changes, so a name registered before a config is loaded (for example a router of a
 * researcher's own, registered through mod.ts) is accepted, and an unknown name fails validation
 * with the list of registered names.
 *
 * Example:
 * ```ts
 * routers.register({
 *   name: "hash",
 *   summary: "routes each token by a hash of its id",
 *   options: z.strictObject({ numBuckets: z.int().min(1).default(64) }),
 *   create: (options) => new HashRouter(options),
 * });
 * ```
 */

import { z } from "zod";
import type { Backend } from "../kernels/backend.ts";
import { createOptimizer, type OptimizerSettings } from "../optim/create.ts";
import type { Optimizer } from "../optim/optimizer.ts";
import { lrFactor } from "../optim/schedule.ts";
import type { Tensor } from "../tensor/mod.ts";
import type { ExperimentConfig } from "./config.ts";
import { UserError } from "./errors.ts";
import {
  ClassifyTaskOptions,
  createClassifyTask,
  NOISE_STDS,
  noiseMetricName,
} from "./tasks/classify.ts";
import { createForecastTask, ForecastTaskOptions } from "./tasks/forecast.ts";
import { createLmTask, LmTaskOptions } from "./tasks/lm.ts";
import { createRecallTask, RecallTaskOptions } from "./tasks/recall.ts";
import type { Task } from "./tasks/task.ts";
import type { AttentionContext, AttentionModule } from "../layers/attention/base.ts";
import { attentionVariants, registerAttentionVariant } from "../layers/attention/registry.ts";
import {
  registerRouter as registerLayerRouter,
  type RouterFactory as LayerRouterFactory,
  ROUTERS,
} from "../layers/moe/routers/mod.ts";
import type { BpeTokenizerJson } from "./tokenizer/bpe.ts";

/** One registered name: its options schema and factory. */
export interface RegistryEntry<Factory> {
  /** The value of `name` in a config section; letters, digits, '_' and '-'. */
  name: string;
  /** One line for `deno task list` and the config reference. */
  summary: string;
  /** A strict object schema of the options; every option needs a default. */
  options: z.ZodObject;
  create: Factory;
  /**
   * For tasks: the names of the metrics `evaluate` returns, the first being the one reports rank
   * by; the trainer logs each as a `val_<name>` column.
   */
  metrics?: string[];
  /** For tasks: what a batch's units are, for the throughput column (`<unit>_per_s`). */
  unit?: string;
}

const ENTRY_NAME = /^[A-Za-z][A-Za-z0-9_-]*$/;

/** A set of named entries of one kind, such as the optimizers. */
export class Registry<Factory> {
  readonly #entries = new Map<string, RegistryEntry<Factory>>();
  #version = 0;

  /**
   * @param kind the singular noun used in messages, for example "optimizer".
   * @param plural the plural noun, for example "optimizers".
   */
  constructor(readonly kind: string, readonly plural: string) {}

  /**
   * Adds an entry. Throws when the name is taken or malformed, or when the options schema
   * defines `name`, which the config uses to select the entry.
   */
  register(entry: RegistryEntry<Factory>): void {
    if (!ENTRY_NAME.test(entry.name)) {
      throw new Error(
        `cannot register ${this.kind} "${entry.name}": a name starts with a letter and contains ` +
          `only letters, digits, '_' and '-'`,
      );
    }
    if (this.#entries.has(entry.name)) {
      throw new Error(
        `cannot register ${this.kind} "${entry.name}": the name is already registered; choose ` +
          `another name`,
      );
    }
    if ("name" in entry.options.shape) {
      throw new Error(
        `cannot register ${this.kind} "${entry.name}": its options define "name", which the ` +
          `config uses to select the ${this.kind}; rename that option`,
      );
    }

    this.#entries.set(entry.name, entry);
    this.#version++;
  }

  /** Returns the entry for `name`; throws `UserError` listing the registered names. */
  get(name: string): RegistryEntry<Factory> {
    const entry = this.#entries.get(name);
    if (entry === undefined) {
      throw new UserError(
        `unknown ${this.kind} "${name}"; registered ${this.plural}: ${this.describeNames()}`,
      );
    }
    return entry;
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** The registered names in registration order. */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  /** The registered entries in registration order. */
  entries(): RegistryEntry<Factory>[] {
    return [...this.#entries.values()];
  }

  /** A counter that changes on every registration, so cached schemas know when to rebuild. */
  get version(): number {
    return this.#version;
  }

  /** The names as a comma-separated list, or "(none)". */
  describeNames(): string {
    return this.#entries.size === 0 ? "(none)" : this.names().join(", ");
  }
}

// The options of today's built-in entries. The static `ExperimentConfig` type is written from
// these, so the trainer can read `config.optimizer.lr` with its type.

// Options every optimizer shares: its base rate, decay, clipping and explicit parameter groups.
const GroupRuleOptions = z.strictObject({
  // The group's name in the run log.
  name: z.string().min(1).optional(),
  // Dotted parameter-name glob: * within one segment, ** across segments.
  params: z.string().min(1).optional(),
  rank: z.int().min(0).optional(),
  minRank: z.int().min(0).optional(),
  maxRank: z.int().min(0).optional(),
  algorithm: z.enum(["adamw", "muon", "sgd"]),
  lr: z.number().gt(0).optional(),
  weightDecay: z.number().min(0).optional(),
});

const sharedOptimizerOptions = {
  lr: z.number().gt(0).default(3e-3),
  // Decoupled weight decay of matrices; norms, biases and embeddings are exempt by default.
  weightDecay: z.number().min(0).default(0.1),
  // Maximum global gradient norm; 0 disables clipping.
  gradClip: z.number().min(0).default(1.0),
  // Explicit parameter groups, matched in order before the default rules.
  groups: z.array(GroupRuleOptions).default([]),
};

const adamMoments = {
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.95),
  eps: z.number().gt(0).default(1e-8),
};

/** Options of AdamW. */
export const AdamWOptions = z.strictObject({ ...sharedOptimizerOptions, ...adamMoments });

/** Options of Muon; the AdamW moments apply to the parameters Muon does not take. */
export const MuonOptions = z.strictObject({
  ...sharedOptimizerOptions,
  ...adamMoments,
  muon: z.strictObject({
    // Defaults to optimizer.lr, which the matchRmsAdamW scale rule makes comparable.
    lr: z.number().gt(0).optional(),
    weightDecay: z.number().min(0).optional(),
    momentum: z.number().min(0).lt(1).default(0.95),
    nesterov: z.boolean().default(true),
    // Newton–Schulz iterations.
    nsSteps: z.int().min(1).default(5),
    // original: sqrt(max(1, rows/cols)); matchRmsAdamW: 0.2 * sqrt(max(rows, cols)).
    scaleRule: z.enum(["original", "matchRmsAdamW"]).default("matchRmsAdamW"),
    momentumWarmup: z.strictObject({
      start: z.number().min(0).lt(1),
      warmupSteps: z.int().min(1),
    }).nullable().default(null),
  }).prefault({}),
});

/** Options of SGD with momentum. */
export const SgdOptions = z.strictObject({
  ...sharedOptimizerOptions,
  momentum: z.number().min(0).lt(1).default(0.9),
  nesterov: z.boolean().default(false),
});

/** Options shared by the warm-up schedules. */
export const WarmupScheduleOptions = z.strictObject({
  // Steps of linear warm-up from lr / warmupSteps to lr.
  warmupSteps: z.int().min(0).default(50),
  // The cosine schedule decays from lr to lr * minLrRatio; the constant schedule ignores it.
  minLrRatio: z.number().min(0).max(1).default(0.1),
});

/** Options of the warm-up–stable–decay schedule. */
export const WsdScheduleOptions = z.strictObject({
  warmupSteps: z.int().min(0).default(50),
  // The rate at the end of the cooldown, as a fraction of lr.
  minLrRatio: z.number().min(0).max(1).default(0),
  // The share of all steps spent in the cooldown.
  decayFraction: z.number().min(0).max(1).default(0.2),
  // 1-sqrt beat linear in Hägele et al. (2024).
  cooldown: z.enum(["linear", "1-sqrt"]).default("1-sqrt"),
});

/** State a task saved with its run (a trained tokenizer), handed back on resume. */
export interface SavedTaskState {
  tokenizer?: BpeTokenizerJson;
}

/** Builds a task's data for a run. */
export type TaskFactory = (
  config: ExperimentConfig,
  backend: Backend,
  saved: SavedTaskState,
) => Promise<Task>;

/**
 * Builds an optimizer over a model's named parameters from its validated options; returns it with
 * warnings for the run log (group rules that matched no parameter).
 */
export type OptimizerFactory = (
  parameters: Map<string, Tensor>,
  options: Record<string, unknown>,
) => { optimizer: Optimizer; warnings: string[] };

/** Returns the learning-rate factor, in [0, 1], of update `step` (from 0) of `totalSteps`. */
export type LrSchedule = (step: number, totalSteps: number) => number;

/** Builds a learning-rate schedule from its validated options. */
export type ScheduleFactory = (options: Record<string, unknown>) => LrSchedule;

/** Builds a router of an MoE layer from its validated options. */
export type RouterFactory = LayerRouterFactory;
/** Builds an attention variant from its validated options. */
export type AttentionFactory = (
  context: AttentionContext,
  options: Record<string, unknown>,
) => AttentionModule;

export const tasks = new Registry<TaskFactory>("task", "tasks");
export const optimizers = new Registry<OptimizerFactory>("optimizer", "optimizers");
export const schedules = new Registry<ScheduleFactory>("schedule", "schedules");
export const routers = new Registry<RouterFactory>("router", "routers");
export const attention = new Registry<AttentionFactory>("attention variant", "attention variants");

// NOTE: the trainer builds the task, AdamW and the schedule directly today; these factories are
// what it will call once it selects them by name.
tasks.register({
  name: "lm",
  summary: "next-token prediction on a text corpus, with byte or BPE tokens",
  options: LmTaskOptions,
  metrics: ["loss", "bitsPerByte", "perplexity"],
  unit: "tokens",
  create: (config, backend, saved) =>
    createLmTask(backend, withoutName(config.task), config.model, saved),
});

tasks.register({
  name: "forecast",
  summary: "multivariate time-series forecasting from CSV series (MSE on normalised values)",
  options: ForecastTaskOptions,
  metrics: ["mse", "mae"],
  unit: "samples",
  create: (config, backend) => createForecastTask(backend, withoutName(config.task), config.model),
});

tasks.register({
  name: "classify",
  summary: "MNIST digit classification with a small vision transformer",
  options: ClassifyTaskOptions,
  metrics: ["loss", "accuracy", ...NOISE_STDS.map(noiseMetricName)],
  unit: "samples",
  create: (config, backend) => createClassifyTask(backend, withoutName(config.task), config.model),
});

tasks.register({
  name: "recall",
  summary: "multi-query associative recall (MQAR) generated from the seed",
  options: RecallTaskOptions,
  metrics: ["loss", "accuracy"],
  unit: "tokens",
  create: (config, backend) =>
    Promise.resolve(
      createRecallTask(
        backend,
        RecallTaskOptions.parse(withoutName(config.task)),
        config.model,
        config.seed,
      ),
    ),
});

/** A config section without its `name`, which selected the entry and is not an option. */
function withoutName(section: Record<string, unknown>): Record<string, unknown> {
  const { name: _name, ...options } = section;
  return options;
}

/** Creates the grouped optimizer of a validated optimizer section. */
function optimizerFactory(name: "adamw" | "muon" | "sgd"): OptimizerFactory {
  return (parameters, options) =>
    createOptimizer(parameters, { ...options, name } as unknown as OptimizerSettings);
}

optimizers.register({
  name: "adamw",
  summary: "Adam with decoupled weight decay (Loshchilov and Hutter, 2019), PyTorch semantics",
  options: AdamWOptions,
  create: optimizerFactory("adamw"),
});

optimizers.register({
  name: "muon",
  summary: "Muon (Newton-Schulz orthogonalised momentum) on hidden matrices, AdamW on the rest",
  options: MuonOptions,
  create: optimizerFactory("muon"),
});

optimizers.register({
  name: "sgd",
  summary: "SGD with momentum (PyTorch semantics), a baseline",
  options: SgdOptions,
  create: optimizerFactory("sgd"),
});

schedules.register({
  name: "cosine",
  summary: "linear warm-up, then a half cosine from lr down to lr * minLrRatio at the last step",
  options: WarmupScheduleOptions,
  create: (options) => {
    const parsed = WarmupScheduleOptions.parse(withoutName(options));
    return (step, totalSteps) => lrFactor(step, totalSteps, { name: "cosine", ...parsed });
  },
});

schedules.register({
  name: "constant",
  summary: "linear warm-up, then lr until the end (minLrRatio is accepted and ignored)",
  options: WarmupScheduleOptions,
  create: (options) => {
    const parsed = WarmupScheduleOptions.parse(withoutName(options));
    return (step, totalSteps) => lrFactor(step, totalSteps, { name: "constant", ...parsed });
  },
});

schedules.register({
  name: "wsd",
  summary: "warm-up, stable at lr, then a linear or 1-sqrt cooldown over the last decayFraction",
  options: WsdScheduleOptions,
  create: (options) => {
    const parsed = WsdScheduleOptions.parse(withoutName(options));
    return (step, totalSteps) => lrFactor(step, totalSteps, { name: "wsd", ...parsed });
  },
});

// The model builds routers and attention variants through the layers' own tables, so a name
// registered here is added there too.
for (const entry of ROUTERS) routers.register(entry);

const ATTENTION_SUMMARIES: Record<string, string> = {
  mha: "causal multi-head attention with grouped-query, RoPE and ALiBi options",
  window: "sliding-window attention: each query sees the last `window` keys",
  moa: "per-head window spans alpha + beta * N (mixture of attention spans)",
  sigmoid: "sigmoid attention without softmax normalisation",
  keyBias: "softmax attention with a learnable sink key bias",
  sinkLogit: "a learnable per-head sink logit in the softmax denominator",
  gated: "attention output gated by a sigmoid of the input",
  moh: "mixture-of-heads: shared heads always on, routed heads chosen per token by top-K",
  dma: "dynamic mask attention: each query keeps its top-w keys scored from the values",
  mla: "multi-head latent attention: a compressed key-value latent with decoupled RoPE",
  gaam: "Gaussian adaptive attention: learnable Gaussian feature weights before the projections",
};

for (const [name, variant] of Object.entries(attentionVariants)) {
  attention.register({
    name,
    summary: ATTENTION_SUMMARIES[name] ?? name,
    options: variant.schema,
    create: variant.create as AttentionFactory,
  });
}

/**
 * Registers a router of a researcher's own under `name`: the config accepts it in
 * `model.moe.router` and the MoE layer builds it.
 */
export function registerRouter(entry: RegistryEntry<RouterFactory>): void {
  routers.register(entry);
  registerLayerRouter(entry);
}

/** Registers an attention variant of a researcher's own for `model.attention`. */
export function registerAttention(entry: RegistryEntry<AttentionFactory>): void {
  attention.register(entry);
  registerAttentionVariant(entry.name, { schema: entry.options, create: entry.create });
}
