/**
 * Experiment plans: a config file with `arms`, `seeds` and `sweep` expands into a deterministic,
 * indexed list of runs, each with a resolved config and a stable id.
 *
 * ```yaml
 * experiment: mlp-ablation
 * extends: ../quickstart.yaml
 * arms:                        # named sets of overrides over the base config
 *   baseline: {}
 *   swiglu: { model.mlp: swiglu }
 * baseline: baseline           # the arm others are tested against (default: "baseline" or the first)
 * seeds: 3                     # a count (seeds 0, 1, 2) or a list such as [0, 7, 42]
 * sweep:
 *   grid: { optimizer.lr: [1e-3, 3e-3] }  # every combination
 *   zip: { train.steps: [100, 200], schedule.warmupSteps: [10, 20] }  # paired by position
 * claims:
 *   - { metric: val_loss, arm: swiglu, vs: baseline, expect: lower }
 * ```
 *
 * Runs are ordered by arm (as written), then sweep point, then seed. `--index` and a SLURM array
 * task select a run by its index in that order. A run's id is
 * `<arm>-s<seed>-<first 12 hex digits of the resolved config's hash>`.
 */

import {
  applyOverride,
  checkKeyPath,
  configHash,
  configText,
  type ExperimentConfig,
  PLAN_KEYS,
  schemaLookup,
  setPath,
  validateConfig,
} from "./config.ts";
import { describeValue, isMapping, readConfigTree } from "./config_source.ts";
import { UserError } from "./errors.ts";
import { metricColumns } from "./trainer.ts";

/** A comparison that a report checks: `arm` against `vs` on one metric. */
export interface Claim {
  /** A metrics.csv column, for example val_loss. */
  metric: string;
  arm: string;
  vs: string;
  /** lower or higher: the arm's mean differs in that direction; equal: within ±within. */
  expect: "lower" | "higher" | "equal";
  /** The equivalence margin for expect: equal, in the metric's unit. */
  within?: number;
  /** The value of each run that is compared: the last logged (final, the default) or the best. */
  at: "final" | "best";
}

/** One run of an experiment. */
export interface PlannedRun {
  /** Position in the plan, from 0. */
  index: number;
  /** `<arm>-s<seed>-<hash>`; also the run directory's name. */
  id: string;
  arm: string;
  seed: number;
  /** Index of the sweep point, from 0; 0 when there is no sweep. */
  point: number;
  /** The dotted keys and values of the sweep point; empty when there is no sweep. */
  pointValues: Record<string, unknown>;
  /** The report's row label: the arm, followed by the sweep values when there is a sweep. */
  group: string;
  config: ExperimentConfig;
  /** The resolved config as YAML. */
  text: string;
  hash: string;
}

/** An expanded experiment. */
export interface ExperimentPlan {
  experiment: string;
  outputDir: string;
  /** The config file it was read from. */
  source: string;
  /** False when the file has no arms, seeds or sweep: a plain single run. */
  planned: boolean;
  arms: string[];
  baseline: string;
  seeds: number[];
  points: Record<string, unknown>[];
  claims: Claim[];
  /** Metric values whose first crossing the report times, in steps: `{ val_loss: 2.0 }`. */
  targets: Record<string, number>;
  runs: PlannedRun[];
}

// Arm names become part of directory names.
const ARM_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.]*$/;

// Keys that arms and sweeps may not set, with the reason.
const FIXED_KEYS: Record<string, string> = {
  experiment: "every run of an experiment writes into one results folder",
  "output.dir": "every run of an experiment writes into one results folder",
  seed: "seeds are set by the seeds key",
};

// Plan keys that --set may change, because they are single values.
const SETTABLE_PLAN_KEYS = ["seeds", "baseline"];

/**
 * Reads a config file (with its `extends`), applies `--set` overrides and expands it into runs.
 *
 * A `--set` override applies to every run after the arm and sweep values, so it wins over them;
 * `--set seeds=2` and `--set baseline=<arm>` change the plan itself. Throws `UserError` naming the
 * file, the key path and the fix.
 */
export async function loadPlan(path: string, overrides: string[] = []): Promise<ExperimentPlan> {
  const raw = await readConfigTree(path);
  return expandPlan(raw, path, overrides);
}

/** Expands a parsed config (after `extends`) into runs; see `loadPlan`. */
export function expandPlan(raw: unknown, source: string, overrides: string[] = []): ExperimentPlan {
  // An empty or non-mapping file gets the config validator's message.
  if (!isMapping(raw)) validateConfig(raw, source, new Set());
  const file = raw as Record<string, unknown>;

  const planSpec: Record<string, unknown> = {};
  const base: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(file)) {
    if (PLAN_KEYS.includes(key)) planSpec[key] = value;
    else base[key] = value;
  }

  const configOverrides: string[] = [];
  for (const override of overrides) {
    const key = override.slice(0, Math.max(0, override.indexOf("="))).trim();
    if (SETTABLE_PLAN_KEYS.includes(key)) {
      planSpec[key] = parsePlanValue(override.slice(override.indexOf("=") + 1), key);
    } else {
      configOverrides.push(override);
    }
  }

  const overridden = new Set(configOverrides.map((o) => o.slice(0, o.indexOf("=")).trim()));
  const baseConfig = validateConfig(applyCliOverrides(base, configOverrides), source, overridden);

  const arms = parseArms(planSpec.arms, base, source);
  const armNames = arms.map((arm) => arm.name);
  const baseline = parseBaseline(planSpec.baseline, armNames, source);
  const seeds = parseSeeds(planSpec.seeds, baseConfig.seed, source);
  const sweep = parseSweep(planSpec.sweep, base, source);
  checkNoContradictions(arms, sweep.keys, source);
  // Claims and targets name metrics.csv columns of the base config's task.
  const metrics = metricColumns(baseConfig.task.name).filter((column) => column !== "step");
  const claims = parseClaims(planSpec.claims, armNames, metrics, source);
  const targets = parseTargets(planSpec.targets, metrics, source);

  const runs: PlannedRun[] = [];
  const ids = new Map<string, string>();
  for (const arm of arms) {
    for (const [point, pointValues] of sweep.points.entries()) {
      const pointLabel = Object.entries(pointValues).map(([k, v]) => `${k}=${String(v)}`);
      const group = [arm.name, ...pointLabel].join(" ");

      for (const seed of seeds) {
        let runRaw: Record<string, unknown> = base;
        for (const [key, value] of arm.overrides) {
          runRaw = setPath(runRaw, key.split("."), value, `${source}: arms.${arm.name}`, "there");
        }
        for (const [key, value] of Object.entries(pointValues)) {
          runRaw = setPath(runRaw, key.split("."), value, `${source}: sweep.${key}`, "there");
        }
        runRaw = setPath(runRaw, ["seed"], seed, `${source}: seeds`, "there");
        runRaw = applyCliOverrides(runRaw, configOverrides);

        const where = `${source} (arm ${arm.name}${pointLabel.length ? ", " : ""}` +
          `${pointLabel.join(", ")}, seed ${seed})`;
        const config = validateConfig(runRaw, where, overridden);
        const hash = configHash(config);
        const id = `${arm.name}-s${seed}-${hash}`;

        const earlier = ids.get(id);
        if (earlier !== undefined) {
          throw new UserError(
            `${where}: this run has the same resolved config as ${earlier}, so it would repeat ` +
              `that run; remove the duplicate value from sweep or seeds`,
          );
        }
        ids.set(id, where);

        runs.push({
          index: runs.length,
          id,
          arm: arm.name,
          seed,
          point,
          pointValues,
          group,
          config,
          text: configText(config),
          hash,
        });
      }
    }
  }

  return {
    experiment: baseConfig.experiment,
    outputDir: baseConfig.output.dir,
    source,
    planned: Object.keys(planSpec).length > 0,
    arms: armNames,
    baseline,
    seeds,
    points: sweep.points,
    claims,
    targets,
    runs,
  };
}

/**
 * Selects runs by `--index i` or `--shard i/n` (every n-th run starting at index i).
 * Throws `UserError` for an index out of range or a malformed shard.
 */
export function selectRuns(
  plan: ExperimentPlan,
  selection: { index?: number; shard?: { index: number; count: number } },
): PlannedRun[] {
  const { index, shard } = selection;
  if (index !== undefined) {
    if (!Number.isInteger(index) || index < 0 || index >= plan.runs.length) {
      throw new UserError(
        `--index is ${index} but ${plan.source} has ${plan.runs.length} run(s); choose an index ` +
          `from 0 to ${plan.runs.length - 1}, or run deno task config ${plan.source} to list them`,
      );
    }
    return [plan.runs[index]];
  }
  if (shard !== undefined) {
    return plan.runs.filter((run) => run.index % shard.count === shard.index);
  }
  return plan.runs;
}

/** Parses `--shard i/n`; throws `UserError` unless 0 <= i < n. */
export function parseShard(text: string): { index: number; count: number } {
  const match = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = match ? Number(match[1]) : NaN;
  const count = match ? Number(match[2]) : NaN;
  if (!match || count < 1 || index >= count) {
    throw new UserError(
      `--shard is "${text}"; expected i/n with 0 <= i < n, for example --shard 0/4 for the first ` +
        `of four shards`,
    );
  }
  return { index, count };
}

interface Arm {
  name: string;
  /** [dotted key, value] pairs in the order they are applied. */
  overrides: [string, unknown][];
}

function applyCliOverrides(
  raw: Record<string, unknown>,
  overrides: string[],
): Record<string, unknown> {
  let result = raw;
  for (const override of overrides) result = applyOverride(result, override);
  return result;
}

function parsePlanValue(text: string, key: string): unknown {
  const trimmed = text.trim();
  if (key === "seeds" && /^\d+$/.test(trimmed)) return Number(trimmed);
  if (key === "seeds") {
    throw new UserError(`--set seeds=${text}: expected a count such as 3`);
  }
  return trimmed;
}

function parseArms(value: unknown, base: Record<string, unknown>, source: string): Arm[] {
  if (value === undefined) return [{ name: "base", overrides: [] }];
  if (!isMapping(value) || Object.keys(value).length === 0) {
    throw new UserError(
      `${source}: arms: expected a mapping of arm names to overrides with at least one arm, got ` +
        `${
          describeEmpty(value)
        }; for example arms: { baseline: {}, swiglu: { model.mlp: swiglu } }`,
    );
  }

  const arms: Arm[] = [];
  for (const [name, overrides] of Object.entries(value)) {
    if (!ARM_NAME.test(name)) {
      throw new UserError(
        `${source}: arms.${name}: invalid arm name; an arm name becomes part of a directory ` +
          `name, so use only letters, digits, '_' and '.', starting with a letter or digit`,
      );
    }
    if (overrides !== null && !isMapping(overrides)) {
      throw new UserError(
        `${source}: arms.${name}: expected a mapping of dotted keys to values, got ` +
          `${describeValue(overrides)}; for example ${name}: { model.mlp: swiglu }, or {} for ` +
          `the base config unchanged`,
      );
    }

    const pairs = flattenOverrides(overrides ?? {}, []);
    // A section's name selects the entry whose keys the other overrides are checked against.
    pairs.sort(([a], [b]) => Number(!a.endsWith(".name")) - Number(!b.endsWith(".name")));
    let raw: Record<string, unknown> = base;
    for (const [key, overrideValue] of pairs) {
      const origin = `${source}: arms.${name}.${key}`;
      checkNotFixed(key, origin);
      checkKeyPath(key.split("."), schemaLookup(raw), origin);
      raw = setPath(raw, key.split("."), overrideValue, origin, "in the base config");
    }
    arms.push({ name, overrides: pairs });
  }
  return arms;
}

/** Flattens nested mappings to dotted keys: { model: { mlp: x } } -> [["model.mlp", x]]. */
function flattenOverrides(value: Record<string, unknown>, prefix: string[]): [string, unknown][] {
  const pairs: [string, unknown][] = [];
  for (const [key, child] of Object.entries(value)) {
    const path = [...prefix, ...key.split(".")];
    if (isMapping(child)) pairs.push(...flattenOverrides(child, path));
    else pairs.push([path.join("."), child]);
  }
  return pairs;
}

function checkNotFixed(key: string, origin: string): void {
  const reason = FIXED_KEYS[key];
  if (reason !== undefined) {
    const fix = key === "seed"
      ? "list the seeds in seeds instead"
      : `set ${key} in the base config`;
    throw new UserError(`${origin}: ${key} cannot vary between runs, because ${reason}; ${fix}`);
  }
}

function parseBaseline(value: unknown, arms: string[], source: string): string {
  if (value === undefined) return arms.includes("baseline") ? "baseline" : arms[0];
  if (typeof value !== "string" || !arms.includes(value)) {
    throw new UserError(
      `${source}: baseline: ${describeValue(value)} is not an arm; choose one of ` +
        `${arms.join(", ")}`,
    );
  }
  return value;
}

function parseSeeds(value: unknown, baseSeed: number, source: string): number[] {
  if (value === undefined) return [baseSeed];
  if (typeof value === "number") {
    if (!Number.isInteger(value) || value < 1) {
      throw new UserError(
        `${source}: seeds: a count must be an integer >= 1, got ${value}; for example seeds: 3 ` +
          `runs seeds 0, 1 and 2`,
      );
    }
    return Array.from({ length: value }, (_, i) => i);
  }
  if (Array.isArray(value) && value.length > 0) {
    for (const seed of value) {
      if (!Number.isInteger(seed) || seed < 0) {
        throw new UserError(
          `${source}: seeds: every seed must be an integer >= 0, got ${describeValue(seed)}`,
        );
      }
    }
    const repeated = value.find((seed, i) => value.indexOf(seed) !== i);
    if (repeated !== undefined) {
      throw new UserError(`${source}: seeds: seed ${repeated} is listed twice; list each once`);
    }
    return value as number[];
  }
  throw new UserError(
    `${source}: seeds: expected a count (seeds: 3) or a non-empty list of seeds ` +
      `(seeds: [0, 1, 2]), got ${describeEmpty(value)}`,
  );
}

interface Sweep {
  keys: string[];
  points: Record<string, unknown>[];
}

function parseSweep(value: unknown, base: Record<string, unknown>, source: string): Sweep {
  if (value === undefined) return { keys: [], points: [{}] };
  if (!isMapping(value) || Object.keys(value).length === 0) {
    throw new UserError(
      `${source}: sweep: expected a mapping with grid and/or zip, got ${describeEmpty(value)}; ` +
        `for example sweep: { grid: { optimizer.lr: [1e-3, 3e-3] } }`,
    );
  }
  for (const key of Object.keys(value)) {
    if (key !== "grid" && key !== "zip") {
      throw new UserError(`${source}: sweep.${key}: unknown key; valid keys: grid, zip`);
    }
  }

  const grid = sweepLists(value.grid, "grid", base, source);
  const zip = sweepLists(value.zip, "zip", base, source);
  const zipLengths = new Set(zip.map(([, list]) => list.length));
  if (zipLengths.size > 1) {
    const lengths = zip.map(([key, list]) => `${key} has ${list.length}`).join(", ");
    throw new UserError(
      `${source}: sweep.zip: the lists must have the same length, because zip pairs their ` +
        `values by position, but ${lengths}; make them equal or move a key to sweep.grid`,
    );
  }

  const keys = [...grid, ...zip].map(([key]) => key);
  const repeated = keys.find((key, i) => keys.indexOf(key) !== i);
  if (repeated !== undefined) {
    throw new UserError(
      `${source}: sweep: ${repeated} is in both grid and zip; keep it in one of them`,
    );
  }

  // The cartesian product of the grid lists, with the first key varying slowest.
  let points: Record<string, unknown>[] = [{}];
  for (const [key, list] of grid) {
    points = points.flatMap((point) => list.map((item) => ({ ...point, [key]: item })));
  }
  if (zip.length > 0) {
    const zipped = zip[0][1].map((_, i) =>
      Object.fromEntries(zip.map(([key, list]) => [key, list[i]]))
    );
    points = points.flatMap((point) => zipped.map((tuple) => ({ ...point, ...tuple })));
  }
  return { keys, points };
}

function sweepLists(
  value: unknown,
  kind: "grid" | "zip",
  base: Record<string, unknown>,
  source: string,
): [string, unknown[]][] {
  if (value === undefined) return [];
  if (!isMapping(value) || Object.keys(value).length === 0) {
    throw new UserError(
      `${source}: sweep.${kind}: expected a mapping of dotted keys to lists of values, got ` +
        `${describeEmpty(value)}; for example ${kind}: { optimizer.lr: [1e-3, 3e-3] }`,
    );
  }

  const lists: [string, unknown[]][] = [];
  for (const [key, list] of Object.entries(value)) {
    const origin = `${source}: sweep.${kind}.${key}`;
    checkNotFixed(key, origin);
    checkKeyPath(key.split("."), schemaLookup(base), origin);
    if (!Array.isArray(list) || list.length === 0) {
      throw new UserError(
        `${origin}: expected a non-empty list of values, got ${describeEmpty(list)}; for ` +
          `example [1e-3, 3e-3]`,
      );
    }
    lists.push([key, list]);
  }
  return lists;
}

function checkNoContradictions(arms: Arm[], sweepKeys: string[], source: string): void {
  for (const arm of arms) {
    for (const [key] of arm.overrides) {
      if (sweepKeys.includes(key)) {
        throw new UserError(
          `${source}: arms.${arm.name}.${key}: sweep also sets ${key}, so the arm's value would ` +
            `be replaced in every run; remove it from the arm or from the sweep`,
        );
      }
    }
  }
}

const CLAIM_KEYS = ["metric", "arm", "vs", "expect", "within", "at"];
function parseClaims(
  value: unknown,
  arms: string[],
  metrics: string[],
  source: string,
): Claim[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    throw new UserError(
      `${source}: claims: expected a list of claims, got ${describeValue(value)}; for example ` +
        `claims: [{ metric: val_loss, arm: swiglu, vs: baseline, expect: lower }]`,
    );
  }

  return value.map((claim, i) => {
    const at = `${source}: claims[${i}]`;
    if (!isMapping(claim)) {
      throw new UserError(
        `${at}: expected a mapping with metric, arm, vs and expect, got ` +
          describeValue(claim),
      );
    }
    for (const key of Object.keys(claim)) {
      if (!CLAIM_KEYS.includes(key)) {
        throw new UserError(`${at}.${key}: unknown key; valid keys: ${CLAIM_KEYS.join(", ")}`);
      }
    }

    const { metric, arm, vs, expect, within } = claim;
    if (typeof metric !== "string" || !metrics.includes(metric)) {
      throw new UserError(
        `${at}.metric: ${describeValue(metric)} is not a logged metric; choose one of ` +
          metrics.join(", "),
      );
    }
    for (const [key, name] of [["arm", arm], ["vs", vs]] as const) {
      if (typeof name !== "string" || !arms.includes(name)) {
        throw new UserError(
          `${at}.${key}: ${describeValue(name)} is not an arm; choose one of ${arms.join(", ")}`,
        );
      }
    }
    if (arm === vs) {
      throw new UserError(`${at}: arm and vs are both ${arm}; compare two different arms`);
    }
    if (expect !== "lower" && expect !== "higher" && expect !== "equal") {
      throw new UserError(
        `${at}.expect: expected one of lower, higher, equal, got ${describeValue(expect)}`,
      );
    }
    if (expect === "equal" && (typeof within !== "number" || !(within > 0))) {
      throw new UserError(
        `${at}.within: expect: equal needs within, the largest difference of means that counts ` +
          `as equal, as a number > 0 in the metric's unit; got ${describeValue(within)}`,
      );
    }
    if (expect !== "equal" && within !== undefined) {
      throw new UserError(
        `${at}.within: within applies only to expect: equal, but expect is ${expect}; remove ` +
          `within or set expect: equal`,
      );
    }
    const when = claim.at ?? "final";
    if (when !== "final" && when !== "best") {
      throw new UserError(`${at}.at: expected final or best, got ${describeValue(when)}`);
    }

    return {
      metric,
      arm: arm as string,
      vs: vs as string,
      expect,
      ...(expect === "equal" ? { within: within as number } : {}),
      at: when,
    };
  });
}

/** Parses `targets: { metric: value }`: the report gives the steps each run took to reach them. */
function parseTargets(
  value: unknown,
  metrics: string[],
  source: string,
): Record<string, number> {
  if (value === undefined) return {};
  if (!isMapping(value)) {
    throw new UserError(
      `${source}: targets: expected a mapping of metric to value, got ${describeValue(value)}; ` +
        `for example targets: { val_loss: 2.0 }`,
    );
  }
  const targets: Record<string, number> = {};
  for (const [metric, target] of Object.entries(value)) {
    if (!metrics.includes(metric)) {
      throw new UserError(
        `${source}: targets.${metric}: not a logged metric; choose one of ` +
          metrics.join(", "),
      );
    }
    if (typeof target !== "number" || !Number.isFinite(target)) {
      throw new UserError(
        `${source}: targets.${metric}: expected a finite number, got ${describeValue(target)}`,
      );
    }
    targets[metric] = target;
  }
  return targets;
}

function describeEmpty(value: unknown): string {
  if (isMapping(value) && Object.keys(value).length === 0) return "an empty mapping";
  if (Array.isArray(value) && value.length === 0) return "an empty list";
  return describeValue(value);
}
