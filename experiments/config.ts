/**
 * Experiment config: the zod schema with its defaults, YAML loading, `--set` overrides and the
 * config hash that names a run.
 *
 * YAML is read with the `yaml` package's default YAML 1.2 core schema, so `seed: 010` is 10 and
 * `no`, `on`, `y` stay strings. Every object is strict, so a misspelt key fails validation with the
 * list of valid keys instead of being ignored. zod 4's `z.number()` rejects NaN and ±Infinity, so
 * `lr: .inf` is invalid.
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
import { UserError } from "./errors.ts";

const TaskConfig = z.strictObject({
  name: z.literal("lm").default("lm"),
  corpus: z.enum(["moby-dick"]).default("moby-dick"),
  seqLen: z.int().min(2).default(64),
  valFraction: z.number().gt(0).max(0.5).default(0.1),
});

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

const OptimizerConfig = z.strictObject({
  name: z.literal("adamw").default("adamw"),
  lr: z.number().gt(0).default(3e-3),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.95),
  eps: z.number().gt(0).default(1e-8),
  weightDecay: z.number().min(0).default(0.1),
  // Maximum global gradient norm; 0 disables clipping.
  gradClip: z.number().min(0).default(1.0),
});

const ScheduleConfig = z.strictObject({
  name: z.enum(["cosine", "constant"]).default("cosine"),
  warmupSteps: z.int().min(0).default(50),
  // The cosine schedule decays from lr to lr * minLrRatio.
  minLrRatio: z.number().min(0).max(1).default(0.1),
});

const TrainConfig = z.strictObject({
  steps: z.int().min(1).default(600),
  batchSize: z.int().min(1).default(16),
  logEvery: z.int().min(1).default(10),
  evalEvery: z.int().min(1).default(100),
  evalBatches: z.int().min(1).default(8),
});

const OutputConfig = z.strictObject({
  dir: z.string().min(1).default("results"),
});

// The name becomes a directory under output.dir, so path separators and "." or ".." are invalid.
const ExperimentName = z
  .string()
  .regex(/^[A-Za-z0-9_.-]+$/, "must contain only letters, digits, '_', '.' and '-'")
  .refine((name) => name !== "." && name !== "..", "must not be '.' or '..'");

/** The schema of an experiment config; every section is optional and filled with defaults. */
export const ExperimentConfig = z
  .strictObject({
    experiment: ExperimentName,
    seed: z.int().min(0).default(0),
    backend: z.enum(["webgpu", "cpu"]).default("webgpu"),
    // `prefault({})` parses an omitted section as `{}`, so its fields get their own defaults.
    task: TaskConfig.prefault({}),
    model: ModelConfig.prefault({}),
    optimizer: OptimizerConfig.prefault({}),
    schedule: ScheduleConfig.prefault({}),
    train: TrainConfig.prefault({}),
    output: OutputConfig.prefault({}),
  })
  .superRefine((config, ctx) => {
    const { dModel, numHeads, position } = config.model;

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
  });

/** A validated experiment config with every default filled in. */
export type ExperimentConfig = z.infer<typeof ExperimentConfig>;

/**
 * Reads a YAML config, applies `--set key.path=value` overrides in order and validates it.
 *
 * Returns the config and `text`, the resolved config as YAML, for the run directory.
 * Throws `UserError` for a missing or unreadable file, invalid YAML, an invalid override or an
 * invalid value.
 */
export async function loadConfig(
  path: string,
  overrides: string[] = [],
): Promise<{ config: ExperimentConfig; text: string }> {
  const source = await readConfigFile(path);
  let raw = parseYaml(source, path);

  const overridden = new Set<string>();
  for (const override of overrides) {
    raw = applyOverride(raw, override);
    overridden.add(override.slice(0, override.indexOf("=")).trim());
  }

  const config = validate(raw, path, overridden);
  return { config, text: YAML.stringify(config) };
}

/**
 * Validates a parsed config object and fills in defaults.
 *
 * `source` names the origin (usually the file path) at the start of each error line.
 * Throws `UserError` listing every invalid key and value, one per line.
 */
export function parseConfig(raw: unknown, source: string): ExperimentConfig {
  return validate(raw, source, new Set());
}

/**
 * Returns a copy of `raw` with one `key.path=value` override applied.
 *
 * The value is parsed as a YAML 1.2 scalar, so `train.steps=10` sets a number and
 * `model.mlp=swiglu` a string. Throws `UserError` when the override has no `=`, when the key path
 * is not in the schema (naming the valid keys at that level), or when the value is not a scalar.
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
  checkOverridePath(keys, keyPath);
  const value = parseScalar(override.slice(equals + 1), keyPath);

  const result = raw === undefined || raw === null ? {} : structuredClone(raw);
  if (!isMapping(result)) {
    throw new UserError(`--set ${keyPath}: the config is not a mapping, so no key can be set`);
  }

  let section: Record<string, unknown> = result;
  for (let i = 0; i < keys.length - 1; i++) {
    const child = section[keys[i]] ?? {};
    if (!isMapping(child)) {
      const sectionPath = keys.slice(0, i + 1).join(".");
      throw new UserError(
        `--set ${keyPath}: ${sectionPath} is ${describeValue(child)} in the config, not a ` +
          `mapping; fix ${sectionPath} in the config file`,
      );
    }
    section[keys[i]] = child;
    section = child;
  }
  section[keys[keys.length - 1]] = value;

  return result;
}

/**
 * Returns a stable 12-hex-digit hash of a config: the first 12 hex digits of the SHA-256 of its
 * canonical JSON (object keys sorted at every level).
 */
export function configHash(config: ExperimentConfig): string {
  return createHash("sha256").update(canonicalJson(config)).digest("hex").slice(0, 12);
}

async function readConfigFile(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UserError(
        `config file not found: ${path}; check the path, or run ls configs/ to list the configs`,
      );
    }
    const reason = error instanceof Error ? error.message : String(error);
    throw new UserError(
      `cannot read config file ${path}: ${reason}; check that it is a readable file, or run ` +
        `ls configs/ to list the configs`,
    );
  }
}

function parseYaml(text: string, source: string): unknown {
  const doc = YAML.parseDocument(text);
  const error = doc.errors[0];
  if (error === undefined) return doc.toJS();

  const position = error.linePos?.[0];
  const location = position === undefined ? source : `${source}:${position.line}:${position.col}`;
  // The yaml package appends " at line L, column C:" and a code frame; the location is given above.
  const reason = error.message.split(" at line ")[0];
  const lineText = position === undefined ? "" : text.split("\n")[position.line - 1]?.trim();
  const shown = lineText ? `; the line is: ${lineText}` : "";
  throw new UserError(`${location}: invalid YAML: ${reason}${shown}`);
}

function validate(raw: unknown, source: string, overridden: Set<string>): ExperimentConfig {
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

  const result = ExperimentConfig.safeParse(raw, { reportInput: true });
  if (result.success) return result.data;

  const lines = result.error.issues.flatMap((issue) => formatIssue(issue, source, overridden));
  throw new UserError(lines.join("\n"));
}

function formatIssue(issue: z.core.$ZodIssue, source: string, overridden: Set<string>): string[] {
  const path = issue.path.map(String);
  const dotted = path.join(".");
  const origin = overridden.has(dotted) ? " (from --set)" : "";

  switch (issue.code) {
    case "unrecognized_keys": {
      const valid = sectionKeys(path).join(", ");
      return issue.keys.map((key) =>
        `${source}: ${[...path, key].join(".")}: unknown key; valid keys: ${valid}`
      );
    }
    case "custom":
      // Cross-field checks write whole sentences that start with the path.
      if (issue.message.startsWith(dotted)) return [`${source}: ${issue.message}${origin}`];
      return [`${source}: ${dotted}: ${describeIssue(issue, path)}${origin}`];
    default:
      return [`${source}: ${dotted || "(top level)"}: ${describeIssue(issue, path)}${origin}`];
  }
}

function describeIssue(issue: z.core.$ZodIssue, path: string[]): string {
  const input = (issue as { input?: unknown }).input;
  const got = `got ${describeValue(input)}`;
  // zod reports `origin: "number"` for range checks on integers, so the schema decides the noun.
  const schema = schemaAt(path);
  const kind = schema instanceof z.ZodNumber && schema.isInt ? "an integer" : "a number";

  switch (issue.code) {
    case "invalid_type": {
      const expected = describeType(issue.expected);
      if (input === undefined) return `required but missing; add it with ${expected} as its value`;
      return `expected ${expected}, ${got}`;
    }
    case "too_small":
      if (issue.origin === "string") return `must not be empty, ${got}`;
      return `expected ${kind} ${issue.inclusive ? ">=" : ">"} ${issue.minimum}, ${got}`;
    case "too_big":
      return `expected ${kind} ${issue.inclusive ? "<=" : "<"} ${issue.maximum}, ${got}`;
    case "invalid_value":
      return `expected one of ${issue.values.map(String).join(", ")}, ${got}`;
    default:
      return `${issue.message}, ${got}`;
  }
}

function describeType(expected: string): string {
  switch (expected) {
    case "int":
      return "an integer";
    case "number":
      return "a finite number";
    case "boolean":
      return "true or false";
    case "string":
      return "a string";
    case "object":
      return "a mapping";
    default:
      return expected;
  }
}

function describeValue(value: unknown): string {
  if (value === null) return "an empty value (null)";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") return JSON.stringify(value);
  return String(value);
}

/** Returns the schema at a key path, unwrapping defaults; undefined when the path is not in it. */
function schemaAt(keys: string[]): z.ZodType | undefined {
  let schema: z.ZodType = unwrap(ExperimentConfig);
  for (const key of keys) {
    if (!(schema instanceof z.ZodObject)) return undefined;
    const child = (schema.shape as Record<string, z.ZodType>)[key];
    if (child === undefined) return undefined;
    schema = unwrap(child);
  }
  return schema;
}

/** Strips default, prefault and refinement wrappers down to the object or leaf schema. */
function unwrap(schema: z.ZodType): z.ZodType {
  let inner = schema;
  while ("innerType" in inner.def) inner = inner.def.innerType as z.ZodType;
  return inner;
}

function sectionKeys(keys: string[]): string[] {
  const schema = schemaAt(keys);
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
}

function checkOverridePath(keys: string[], keyPath: string): void {
  for (let i = 0; i < keys.length; i++) {
    const parent = keys.slice(0, i);
    const parentSchema = schemaAt(parent);
    const where = parent.length === 0 ? "at the top level" : `in ${parent.join(".")}`;

    if (!(parentSchema instanceof z.ZodObject)) {
      throw new UserError(
        `--set ${keyPath}: ${parent.join(".")} is a value, not a section, so it has no key ` +
          `"${keys[i]}"`,
      );
    }
    if (!(keys[i] in parentSchema.shape)) {
      throw new UserError(
        `--set ${keyPath}: unknown key "${keys[i]}" ${where}; valid keys: ` +
          sectionKeys(parent).join(", "),
      );
    }
  }

  if (schemaAt(keys) instanceof z.ZodObject) {
    const children = sectionKeys(keys).map((key) => `${keyPath}.${key}`).join(", ");
    throw new UserError(`--set ${keyPath}: ${keyPath} is a section; set one of ${children}`);
  }
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

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
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
