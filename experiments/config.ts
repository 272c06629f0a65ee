/**
 * Experiment config: the zod schema built from the registries, YAML loading with `extends:`,
 * typed `--set` overrides and the config hash that names a run.
 *
 * YAML is read with the `yaml` package's default YAML 1.2 core schema, so `seed: 010` is 10 and
 * `no`, `on`, `y` stay strings. Every object is strict, so a misspelt key fails validation with the
 * list of valid keys instead of being ignored. zod 4's `z.number()` rejects NaN and ±Infinity, so
 * `lr: .inf` is invalid.
 *
 * The `task`, `optimizer` and `schedule` sections select a registered entry by `name` (see
 * registry.ts); the rest of the section holds that entry's options.
 *
 * Example:
 * ```ts
 * const { config, text } = await loadConfig("configs/quickstart.yaml", ["train.steps=10"]);
 * const runName = `${config.experiment}-${configHash(config)}`;
 * ```
 */

import { createHash } from "node:crypto";
import YAML from "yaml";
import { z } from "zod";
import { describeValue, isMapping, PLAN_KEYS, readConfigTree } from "./config_source.ts";
import { formatIssues, type SchemaLookup } from "./config_issues.ts";
import { UserError } from "./errors.ts";
import {
  AdamWOptions,
  attention,
  MuonOptions,
  optimizers,
  type Registry,
  routers,
  schedules,
  SgdOptions,
  tasks,
  WarmupScheduleOptions,
  WsdScheduleOptions,
} from "./registry.ts";
import type { ClassifyTaskOptions } from "./tasks/classify.ts";
import type { ForecastTaskOptions } from "./tasks/forecast.ts";
import type { LmTaskOptions } from "./tasks/lm.ts";
import type { RecallTaskOptions } from "./tasks/recall.ts";

const ModelConfig = z.strictObject({
  dModel: z.int().min(1).default(96),
  numLayers: z.int().min(1).default(3),
  numHeads: z.int().min(1).default(4),
  dFF: z.int().min(1).default(384),
  mlp: z.enum(["gelu", "swiglu"]).default("gelu"),
  norm: z.enum(["rmsnorm", "layernorm"]).default("rmsnorm"),
  position: z.enum(["rope", "learned", "none"]).default("rope"),
  tieEmbeddings: z.boolean().default(true),
  normEps: z.number().gt(0).default(1e-5),
  initStd: z.number().gt(0).default(0.02),
});

/**
 * The mixture-of-experts section: which blocks replace their MLP with an MoE layer, the router,
 * and the layer's shape in DeepSeekMoE's terms (granularity m splits each of the N experts into m
 * of width dFF/m, and K_s of the m·N are shared, always-on experts).
 */
function moeSchema(): z.ZodType {
  return z.strictObject({
    // Blocks with an MoE layer: all, the odd-numbered ones (1, 3, ...), or a list of indices.
    layers: z.union([z.enum(["all", "every-other"]), z.array(z.int().min(0)).min(1)])
      .default("all"),
    router: registeredSection(routers as Registry<unknown>),
    numExperts: z.int().min(1).default(8),
    topK: z.int().min(1).default(2),
    // Hidden width of one expert before segmentation.
    dFF: z.int().min(1).default(192),
    sharedExperts: z.int().min(0).default(0),
    granularity: z.int().min(1).default(1),
    // Capacity per expert = ceil(assignments / experts * capacityFactor); null is dropless.
    capacityFactor: z.number().gt(0).nullable().default(null),
    dropPolicy: z.enum(["position", "probability"]).default("position"),
    ffn: z.enum(["gelu", "swiglu"]).default("gelu"),
    auxLossWeight: z.number().min(0).default(0.01),
    zLossWeight: z.number().min(0).default(0),
  });
}

/** The model section; attention and the router are chosen by name from their registries. */
function modelSchema(): z.ZodObject {
  return ModelConfig.extend({
    attention: registeredSection(attention as Registry<unknown>),
    moe: moeSchema().optional(),
    // ConceptMoE: the middle blocks run on one state per chunk of about `ratio` tokens.
    concept: z.strictObject({
      ratio: z.number().gt(1),
      encoderLayers: z.int().min(0).default(1),
      decoderLayers: z.int().min(0).default(1),
      // "sum" lets a token read the later tokens of its chunk; "select" is causal.
      merge: z.enum(["select", "sum"]).default("select"),
      sharpenRate: z.number().positive().default(6),
      ratioLossWeight: z.number().min(0).default(0.03),
      // Concept slots per sequence = ceil(capacityFactor * seqLen / ratio); 1 matches compute.
      capacityFactor: z.number().positive().default(1),
      // Experts per concept in the concept blocks; null is round(ratio * moe.topK).
      topK: z.int().min(1).nullable().default(null),
    }).optional(),
  });
}

const TrainConfig = z.strictObject({
  steps: z.int().min(1).default(600),
  batchSize: z.int().min(1).default(16),
  logEvery: z.int().min(1).default(10),
  evalEvery: z.int().min(1).default(100),
  evalBatches: z.int().min(1).default(8),
  // Steps between checkpoints; 0 saves only at the end of the run.
  checkpointEvery: z.int().min(0).default(0),
  // How many of the newest checkpoints to keep.
  keepCheckpoints: z.int().min(1).default(2),
  // Steps between diagnostics probes (routing.csv, attention.csv); 0 turns them off.
  probeEvery: z.int().min(0).default(0),
  // Profile super experts at the end of the run (MoE models): super_experts.csv and summary.
  superExperts: z.boolean().default(false),
});

const OutputConfig = z.strictObject({
  dir: z.string().min(1).default("results"),
});

// The name becomes a directory under output.dir, so path separators and "." or ".." are invalid.
const ExperimentName = z
  .string()
  .regex(/^[A-Za-z0-9_.-]+$/, "must contain only letters, digits, '_', '.' and '-'")
  .refine((name) => name !== "." && name !== "..", "must not be '.' or '..'");

/**
 * The sections whose `name` selects a registry entry, with the registry. Each section defaults
 * to the first entry registered.
 */
/** The validated MoE section. */
export interface MoeConfig {
  layers: "all" | "every-other" | number[];
  router: { name: string; [option: string]: unknown };
  numExperts: number;
  topK: number;
  dFF: number;
  sharedExperts: number;
  granularity: number;
  capacityFactor: number | null;
  dropPolicy: "position" | "probability";
  ffn: "gelu" | "swiglu";
  auxLossWeight: number;
  zLossWeight: number;
}

/** Registered sections inside other sections, by dotted path. */
export const NESTED_REGISTERED_SECTIONS: Record<string, Registry<unknown>> = {
  "model.attention": attention as Registry<unknown>,
  "model.moe.router": routers as Registry<unknown>,
};

export const REGISTERED_SECTIONS: Record<string, Registry<unknown>> = {
  task: tasks as Registry<unknown>,
  optimizer: optimizers as Registry<unknown>,
  schedule: schedules as Registry<unknown>,
};

export { PLAN_KEYS };

/**
 * A validated experiment config with every default filled in.
 *
 * The sections chosen by name are typed with today's built-in entries. An entry registered at
 * run time is validated by its own schema but reaches the trainer under these types.
 */
export interface ExperimentConfig {
  experiment: string;
  seed: number;
  backend: "webgpu" | "cpu";
  task:
    | ({ name: "lm" } & z.output<typeof LmTaskOptions>)
    | ({ name: "forecast" } & z.output<typeof ForecastTaskOptions>)
    | ({ name: "classify" } & z.output<typeof ClassifyTaskOptions>)
    | ({ name: "recall" } & z.output<typeof RecallTaskOptions>);
  model: z.output<typeof ModelConfig> & {
    attention?: { name: string; [option: string]: unknown };
    moe?: MoeConfig;
  };
  optimizer:
    | ({ name: "adamw" } & z.output<typeof AdamWOptions>)
    | ({ name: "muon" } & z.output<typeof MuonOptions>)
    | ({ name: "sgd" } & z.output<typeof SgdOptions>);
  schedule:
    | ({ name: "cosine" | "constant" } & z.output<typeof WarmupScheduleOptions>)
    | ({ name: "wsd" } & z.output<typeof WsdScheduleOptions>);
  train: z.output<typeof TrainConfig>;
  output: z.output<typeof OutputConfig>;
}

let cachedSchema: { key: string; schema: z.ZodType } | undefined;

/**
 * Returns the config schema for the current registry contents; it is rebuilt after any
 * registration, so a name registered before validation is accepted.
 */
export function configSchema(): z.ZodType {
  const key = [...Object.values(REGISTERED_SECTIONS), ...Object.values(NESTED_REGISTERED_SECTIONS)]
    .map((registry) => (registry as Registry<unknown>).version).join(",");
  if (cachedSchema?.key !== key) cachedSchema = { key, schema: buildSchema() };
  return cachedSchema.schema;
}

/**
 * Reads a YAML config and the files it extends, applies `--set key.path=value` overrides in order
 * and validates it.
 *
 * The plan keys (`arms`, `seeds`, `sweep`, `claims`, `baseline`) are left out: this returns the
 * base config, and `loadPlan` in plan.ts expands an experiment into runs. Returns the config and
 * `text`, the resolved config as YAML, for the run directory. Throws `UserError` for a missing or
 * unreadable file, invalid YAML, an invalid override or an invalid value.
 */
export async function loadConfig(
  path: string,
  overrides: string[] = [],
): Promise<{ config: ExperimentConfig; text: string }> {
  let raw = await readConfigTree(path);
  if (isMapping(raw)) raw = withoutPlanKeys(raw);

  const overridden = new Set<string>();
  for (const override of overrides) {
    raw = applyOverride(raw, override);
    overridden.add(override.slice(0, override.indexOf("=")).trim());
  }

  const config = validateConfig(raw, path, overridden);
  return { config, text: configText(config) };
}

/**
 * Validates a parsed config object and fills in defaults.
 *
 * `source` names the origin (usually the file path) at the start of each error line.
 * Throws `UserError` listing every invalid key and value, one per line.
 */
export function parseConfig(raw: unknown, source: string): ExperimentConfig {
  return validateConfig(raw, source, new Set());
}

/** The resolved config as YAML, as saved in a run directory. */
export function configText(config: ExperimentConfig): string {
  return YAML.stringify(config);
}

/**
 * Validates `raw`; keys in `overridden` are marked "(from --set)" in error lines.
 * Throws `UserError` with one line per invalid key or value.
 */
export function validateConfig(
  raw: unknown,
  source: string,
  overridden: Set<string>,
): ExperimentConfig {
  if (raw === undefined || raw === null) {
    throw new UserError(
      `${source}: the config is empty; it needs at least "experiment: <name>", see ` +
        `configs/quickstart.yaml`,
    );
  }
  if (!isMapping(raw)) {
    throw new UserError(
      `${source}: expected a mapping of keys (experiment, model, train, ...) at the top level, ` +
        `got ${describeValue(raw)}`,
    );
  }

  const result = configSchema().safeParse(raw, { reportInput: true });
  if (result.success) return result.data as ExperimentConfig;

  const lookup = schemaLookup(raw);
  throw new UserError(formatIssues(result.error.issues, source, lookup, overridden).join("\n"));
}

/**
 * Returns a copy of `raw` with one `key.path=value` override applied.
 *
 * The value is typed by the schema: for a string or choice key the text is kept as written (so
 * `experiment=001` is the string "001"); otherwise it is parsed as a YAML 1.2 scalar, so
 * `train.steps=10` sets a number and `model.tieEmbeddings=false` a boolean. Throws `UserError`
 * when the override has no `=`, when the key path is not in the schema (naming the valid keys at
 * that level), or when the value is not a scalar.
 */
export function applyOverride(raw: unknown, override: string): Record<string, unknown> {
  const equals = override.indexOf("=");
  const keyPath = equals < 0 ? "" : override.slice(0, equals).trim();
  if (keyPath === "") {
    throw new UserError(
      `--set expects key.path=value, for example --set train.steps=10, got "${override}"`,
    );
  }

  const keys = keyPath.split(".");
  const lookup = schemaLookup(raw);
  checkKeyPath(keys, lookup, `--set ${keyPath}`);
  const text = override.slice(equals + 1);
  const value = takesText(lookup.leafAt(keys)) ? text.trim() : parseScalar(text, keyPath);

  return setPath(raw, keys, value, `--set ${keyPath}`, "in the config");
}

/**
 * Returns a copy of `raw` with the value at `keys` replaced, creating sections as needed.
 * `origin` starts each error message (for example `--set train.steps`); `where` says where the
 * offending section is written.
 */
export function setPath(
  raw: unknown,
  keys: string[],
  value: unknown,
  origin: string,
  where: string,
): Record<string, unknown> {
  const result = raw === undefined || raw === null ? {} : structuredClone(raw);
  if (!isMapping(result)) {
    throw new UserError(`${origin}: the config is not a mapping, so no key can be set`);
  }

  let section: Record<string, unknown> = result;
  for (let i = 0; i < keys.length - 1; i++) {
    const child = section[keys[i]] ?? {};
    if (!isMapping(child)) {
      const sectionPath = keys.slice(0, i + 1).join(".");
      throw new UserError(
        `${origin}: ${sectionPath} is ${describeValue(child)} ${where}, not a mapping; fix ` +
          `${sectionPath} ${where}`,
      );
    }
    section[keys[i]] = child;
    section = child;
  }
  section[keys[keys.length - 1]] = value;

  return result;
}

/**
 * Checks that `keys` names a value (not a section) in the schema for `raw`; throws `UserError`
 * starting with `origin` and naming the valid keys at the level that is wrong.
 */
export function checkKeyPath(keys: string[], lookup: SchemaLookup, origin: string): void {
  for (let i = 0; i < keys.length; i++) {
    const parent = keys.slice(0, i);
    const parentKeys = lookup.keysAt(parent);
    const where = parent.length === 0 ? "at the top level" : `in ${parent.join(".")}`;

    if (parentKeys === undefined) {
      throw new UserError(
        `${origin}: ${parent.join(".")} is a value, not a section, so it has no key "${keys[i]}"`,
      );
    }
    if (!parentKeys.includes(keys[i])) {
      throw new UserError(
        `${origin}: unknown key "${keys[i]}" ${where}; valid keys: ${parentKeys.join(", ")}`,
      );
    }
  }

  const children = lookup.keysAt(keys);
  if (children !== undefined) {
    const keyPath = keys.join(".");
    const listed = children.map((key) => `${keyPath}.${key}`).join(", ");
    throw new UserError(`${origin}: ${keyPath} is a section; set one of ${listed}`);
  }
}

/**
 * Returns a stable 12-hex-digit hash of a config: the first 12 hex digits of the SHA-256 of its
 * canonical JSON (object keys sorted at every level).
 */
export function configHash(config: ExperimentConfig): string {
  return createHash("sha256").update(canonicalJson(config)).digest("hex").slice(0, 12);
}

/**
 * Returns lookups into the schema for `raw`: in a registered section, the keys are those of the
 * entry that `raw` names there (or of the default entry).
 */
export function schemaLookup(raw: unknown): SchemaLookup {
  const leafAt = (keys: string[]): z.ZodType | undefined => {
    let schema: z.ZodType = topLevelObject();
    for (let i = 0; i < keys.length; i++) {
      if (!(schema instanceof z.ZodObject)) return undefined;
      const path = keys.slice(0, i + 1).join(".");
      const child = registryOf(path) !== undefined
        ? registeredVariant(path, raw)
        : (schema.shape as Record<string, z.ZodType>)[keys[i]];
      if (child === undefined) return undefined;
      schema = unwrap(child);
    }
    return schema;
  };

  const keysAt = (keys: string[]): string[] | undefined => {
    const schema = leafAt(keys);
    return schema instanceof z.ZodObject ? Object.keys(schema.shape) : undefined;
  };

  const registryAt = (keys: string[]) => registryOf(keys.join("."));

  return { leafAt, keysAt, registryAt };
}

function buildSchema(): z.ZodType {
  return z
    .strictObject({
      experiment: ExperimentName,
      seed: z.int().min(0).default(0),
      backend: z.enum(["webgpu", "cpu"]).default("webgpu"),
      task: registeredSection(tasks as Registry<unknown>),
      // `prefault({})` parses an omitted section as `{}`, so its fields get their own defaults.
      model: modelSchema().prefault({}),
      optimizer: registeredSection(optimizers as Registry<unknown>),
      schedule: registeredSection(schedules as Registry<unknown>),
      train: TrainConfig.prefault({}),
      output: OutputConfig.prefault({}),
    })
    .superRefine((config, ctx) => {
      const model = config.model as ExperimentConfig["model"];
      checkModel(model, ctx);
      if (model.moe !== undefined) checkMoe(model.moe, model.numLayers, ctx);
    });
}

/**
 * A section that selects a registry entry by `name`: a discriminated union of one strict object
 * per entry. An omitted section or name selects the first registered entry.
 */
function registeredSection(registry: Registry<unknown>): z.ZodType {
  const variants = registry.entries().map((entry): z.ZodObject =>
    z.strictObject({ name: z.literal(entry.name), ...entry.options.shape })
  );
  const defaultName = registry.names()[0];
  const fillName = (value: unknown) => {
    if (value === undefined) return { name: defaultName };
    if (isMapping(value) && value.name === undefined) return { name: defaultName, ...value };
    return value;
  };
  return z.preprocess(
    fillName,
    z.discriminatedUnion("name", variants as [z.ZodObject, ...z.ZodObject[]]),
  );
}

/** Cross-field checks of the MoE section, each naming the path, the values and a fix. */
function checkMoe(moe: MoeConfig, numLayers: number, ctx: z.RefinementCtx): void {
  const issue = (path: string[], input: unknown, message: string) =>
    ctx.addIssue({ code: "custom", path: ["model", "moe", ...path], input, message });
  const { numExperts, topK, granularity: m, sharedExperts: shared, dFF } = moe;

  if (topK > numExperts) {
    issue(
      ["topK"],
      topK,
      `model.moe.topK is ${topK} but numExperts is ${numExperts}; choose topK <= numExperts`,
    );
  }
  if (shared >= m * numExperts) {
    issue(
      ["sharedExperts"],
      shared,
      `model.moe.sharedExperts is ${shared} but granularity × numExperts is ${m * numExperts}, ` +
        `which leaves no routed expert; choose sharedExperts < ${m * numExperts}`,
    );
  } else if (shared > m * topK) {
    issue(
      ["sharedExperts"],
      shared,
      `model.moe.sharedExperts is ${shared} but granularity × topK is ${m * topK}; shared ` +
        `experts count toward the active ones, so choose sharedExperts <= ${m * topK}`,
    );
  }
  if (dFF % m !== 0) {
    issue(
      ["dFF"],
      dFF,
      `model.moe.dFF is ${dFF} but granularity is ${m}; choose a dFF divisible by ${m}`,
    );
  }
  if (Array.isArray(moe.layers)) {
    for (const layer of moe.layers) {
      if (layer >= numLayers) {
        issue(
          ["layers"],
          layer,
          `model.moe.layers lists block ${layer} but the model has ${numLayers} blocks ` +
            `(0 to ${numLayers - 1}); remove it or raise model.numLayers`,
        );
      }
    }
  }
}

function checkModel(model: z.output<typeof ModelConfig>, ctx: z.RefinementCtx): void {
  const { dModel, numHeads, position } = model;

  if (dModel % numHeads !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["model", "numHeads"],
      input: numHeads,
      message: `model.numHeads is ${numHeads} but model.dModel is ${dModel}; ` +
        `choose numHeads that divides dModel`,
    });
    return;
  }

  // RoPE rotates pairs of features within each head, so the head size must be even.
  const headSize = dModel / numHeads;
  if (position === "rope" && headSize % 2 !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["model", "position"],
      input: position,
      message: `model.position is rope but the head size dModel / numHeads = ` +
        `${dModel} / ${numHeads} = ${headSize} is odd; choose dModel and numHeads with an even ` +
        `head size, or set model.position to learned or none`,
    });
  }
}

/** The top-level object schema, from which the lookups walk. */
function topLevelObject(): z.ZodObject {
  return unwrap(configSchema()) as z.ZodObject;
}

function registryOf(path: string): Registry<unknown> | undefined {
  return REGISTERED_SECTIONS[path] ?? NESTED_REGISTERED_SECTIONS[path];
}

/** The strict object of the entry that `raw` selects in a registered section at a dotted path. */
function registeredVariant(path: string, raw: unknown): z.ZodObject {
  const registry = registryOf(path)!;
  let value: unknown = raw;
  for (const key of path.split(".")) value = isMapping(value) ? value[key] : undefined;
  const name = isMapping(value) && typeof value.name === "string"
    ? value.name
    : registry.names()[0];

  if (registry.has(name)) {
    return z.strictObject({ name: z.string(), ...registry.get(name).options.shape });
  }
  // An unknown name: accept the keys of every entry here, and let validation report the name.
  const shapes = registry.entries().map((entry) => entry.options.shape);
  return z.strictObject(Object.assign({ name: z.string() }, ...shapes));
}

/** Strips default, prefault and refinement wrappers down to the object or leaf schema. */
function unwrap(schema: z.ZodType): z.ZodType {
  let inner = schema;
  while ("innerType" in inner.def) inner = inner.def.innerType as z.ZodType;
  return inner;
}

/** True when a `--set` value for this schema is a string as written. */
function takesText(schema: z.ZodType | undefined): boolean {
  if (schema instanceof z.ZodString) return true;
  if (schema instanceof z.ZodEnum) {
    return Object.values(schema.enum).every((value) => typeof value === "string");
  }
  return false;
}

function parseScalar(text: string, keyPath: string): unknown {
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message.split(" at line ")[0] : String(error);
    throw new UserError(`--set ${keyPath}: invalid YAML value "${text}": ${reason}`);
  }

  if (value !== null && typeof value === "object") {
    throw new UserError(
      `--set ${keyPath}: expected a single value such as 10, 3e-3, true or swiglu, got ` +
        `${describeValue(value)} "${text}"`,
    );
  }
  return value;
}

function withoutPlanKeys(raw: Record<string, unknown>): Record<string, unknown> {
  const result = { ...raw };
  for (const key of PLAN_KEYS) delete result[key];
  return result;
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (isMapping(value)) {
    const entries = Object.keys(value).sort().map((key) =>
      `${JSON.stringify(key)}:${canonicalJson(value[key])}`
    );
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value);
}
