/**
 * The config reference printed by `deno task config --reference`: a commented YAML file with every
 * key, its type, its default and, for sections chosen by name, the registered choices.
 */

import YAML from "yaml";
import { z } from "zod";
import { configSchema, parseConfig, REGISTERED_SECTIONS } from "./config.ts";
import { attention, type Registry, routers } from "./registry.ts";

// Descriptions of the built-in keys with their units. Registered options use their schema's
// description instead.
const DESCRIPTIONS: Record<string, string> = {
  experiment: "name of the results folder under output.dir (letters, digits, _ . -)",
  seed: "seed of initialisation and data order; seeds: replaces it in a plan",
  backend: "where to compute: webgpu (navigator.gpu) or cpu (WebAssembly SIMD, no GPU needed)",
  "task.corpus": "text to model: moby-dick, brown, or path (a UTF-8 file or folder)",
  "task.path": "the text file or folder when corpus is path, or the CSV when dataset is path",
  "task.seqLen": "tokens per training window",
  "task.valFraction": "fraction of the data held out for validation",
  "task.tokenizer": "byte tokens, or a BPE tokenizer trained on the training split",
  "task.vocabSize": "BPE vocabulary size, at least 256 (the byte fallback)",
  "task.dataset": "the data set of the task",
  "task.columns": "CSV columns to forecast; empty takes every numeric column",
  "task.lookback": "past steps the forecaster reads",
  "task.horizon": "future steps it predicts",
  "task.patchLen": "steps per input patch; must divide lookback",
  "task.testFraction": "fraction of the series, from its end, held out for testing",
  "task.patchSize": "image patch side in pixels; must divide 28",
  "task.pooling": "class token or mean of the patch states",
  "task.numPairs": "key-value pairs per recall sequence",
  "model.dModel": "width of the residual stream",
  "model.numLayers": "number of decoder blocks",
  "model.numHeads": "attention heads per block; must divide dModel",
  "model.dFF": "hidden width of each MLP",
  "model.mlp": "MLP activation: gelu, or swiglu (gated)",
  "model.norm": "normalisation layer",
  "model.position": "position encoding: rope (rotary), learned, or none",
  "model.tieEmbeddings": "share the input embedding with the output head",
  "model.normEps": "epsilon added inside the norm's square root",
  "model.initStd": "standard deviation of the normal initialisation of weights",
  "model.moe.layers": "blocks with an MoE layer: all, every-other (1, 3, ...), or a list",
  "model.concept.ratio": "R, the target compression: tokens per concept",
  "model.concept.encoderLayers": "blocks before merging, which run on every token",
  "model.concept.decoderLayers": "blocks after broadcasting back, which run on every token",
  "model.concept.merge": "select (causal: a chunk's last token) or sum (reads later tokens)",
  "model.concept.sharpenRate": "sharpening of the boundary probabilities while training",
  "model.concept.ratioLossWeight": "weight of the loss that pulls the boundary rate toward 1/R",
  "model.concept.capacityFactor": "concept slots per sequence = ceil(factor * seqLen / R)",
  "model.concept.topK": "experts per concept in the concept blocks; null is round(R * moe.topK)",
  "model.moe.numExperts": "N, experts before fine-grained segmentation (shared included)",
  "model.moe.topK": "K, experts per token before segmentation (shared included)",
  "model.moe.dFF": "hidden width of one expert before segmentation",
  "model.moe.sharedExperts": "K_s, always-on experts after segmentation",
  "model.moe.granularity": "m: each expert becomes m experts of width dFF/m, m*K active",
  "model.moe.capacityFactor":
    "per-expert capacity ceil(assignments/experts * factor); null is dropless",
  "model.moe.dropPolicy": "which assignments a full expert drops: latest position or lowest score",
  "model.moe.ffn": "expert feed-forward: gelu, or swiglu (gated)",
  "model.moe.auxLossWeight": "alpha of the Switch load-balancing loss",
  "model.moe.zLossWeight": "weight of the router z-loss (squared log-sum-exp of logits)",
  "optimizer.lr": "peak learning rate",
  "optimizer.beta1": "decay of the first-moment average",
  "optimizer.beta2": "decay of the second-moment average",
  "optimizer.eps": "added to the second-moment square root",
  "optimizer.weightDecay": "decoupled weight decay per unit learning rate",
  "optimizer.gradClip": "maximum global gradient norm; 0 disables clipping",
  "optimizer.groups": "explicit parameter groups {params: glob, rank, algorithm, lr, weightDecay}",
  "optimizer.momentum": "SGD momentum",
  "optimizer.nesterov": "use Nesterov momentum",
  "optimizer.muon": "Muon's own options; lr and weightDecay default to the optimizer's",
  "schedule.warmupSteps": "steps of linear warm-up to the peak learning rate",
  "schedule.minLrRatio": "final learning rate as a fraction of the peak (cosine, wsd)",
  "schedule.decayFraction": "share of all steps spent in the WSD cooldown",
  "schedule.cooldown": "shape of the WSD cooldown",
  "train.steps": "optimizer steps",
  "train.batchSize": "sequences per step",
  "train.logEvery": "steps between metrics.csv rows",
  "train.evalEvery": "steps between validation evaluations (and at the last step)",
  "train.evalBatches": "validation batches per evaluation",
  "train.checkpointEvery": "steps between checkpoints; 0 saves one at the end only",
  "train.keepCheckpoints": "newest checkpoints kept in checkpoints/",
  "train.probeEvery": "steps between routing.csv and attention.csv probes; 0 turns them off",
  "train.superExperts": "profile super experts at the end: super_experts.csv, zeroed-expert losses",
  "output.dir": "folder that holds one results folder per experiment",
};

const PLAN_REFERENCE = `
# --- Experiment plans (optional; see docs/CONFIG.md) -------------------------------------------
# extends: ../quickstart.yaml       # base file or list of files, relative to this file's folder;
#                                   # merged in order, mappings deeply, lists replaced
# arms:                             # named sets of overrides (dotted keys) over the base config
#   baseline: {}
#   swiglu: { model.mlp: swiglu }
# baseline: baseline                # arm that p-values compare against (default: "baseline" or
#                                   # the first arm)
# seeds: 3                          # a count (seeds 0, 1, 2) or a list such as [0, 7, 42]
# sweep:
#   grid: { optimizer.lr: [1.0e-3, 3.0e-3] }              # every combination of the lists
#   zip: { train.steps: [100, 200], train.batchSize: [8, 16] }  # lists paired by position
# claims:                           # checked by the report at p < 0.05
#   - { metric: val_loss, arm: swiglu, vs: baseline, expect: lower }   # or higher
#   - { metric: val_loss, arm: swiglu, vs: baseline, expect: equal, within: 0.01, at: best }
# targets: { val_loss: 2.2 }        # the report gives the steps each arm takes to reach these
`;

/** Returns the reference as commented YAML. */
export function configReference(): string {
  const defaults = parseConfig({ experiment: "quickstart" }, "defaults") as unknown as Record<
    string,
    Record<string, unknown> | unknown
  >;
  const lines = [
    "# moelab config reference: every key with its type and default value.",
    "# Generated by deno task config --reference. Every key but experiment is optional.",
    "",
  ];

  for (const [key, value] of Object.entries(defaults)) {
    if (key in REGISTERED_SECTIONS) {
      lines.push("", ...registeredSectionLines(key));
    } else if (value !== null && typeof value === "object") {
      lines.push("", `${key}:`);
      for (const [child, childValue] of Object.entries(value as Record<string, unknown>)) {
        if (key === "model" && child === "attention") {
          lines.push(...registeredSectionLines("model.attention", attention, "  "));
          continue;
        }
        const schema = fieldSchema(key, child);
        lines.push(keyLine(`  ${child}`, childValue, schema, DESCRIPTIONS[`${key}.${child}`]));
      }
      if (key === "model") lines.push(...moeLines(), ...conceptLines());
    } else {
      const schema = fieldSchema(undefined, key);
      const shown = key === "experiment" ? "<name>" : value;
      lines.push(keyLine(key, shown, schema, DESCRIPTIONS[key]));
    }
  }

  lines.push(PLAN_REFERENCE.trimEnd(), "");
  return lines.join("\n");
}

function registeredSectionLines(
  section: string,
  registry: Registry<unknown> = REGISTERED_SECTIONS[section],
  indent = "",
): string[] {
  const [first, ...others] = registry.entries();
  const key = section.split(".").at(-1);
  const lines = [
    `${indent}${key}:`,
    `${indent}  name: ${first.name} # one of the registered ${registry.plural}: ` +
    registry.describeNames(),
    `${indent}  # ${first.name}: ${first.summary}`,
  ];
  lines.push(...optionLines(section, first.options, `${indent}  `));

  for (const entry of others) {
    lines.push(`${indent}  # or name: ${entry.name} (${entry.summary}), with options:`);
    lines.push(...optionLines(section, entry.options, `${indent}  # `));
  }
  return lines;
}

/**
 * The default of each option, or the marker `<required>` for an option without one (a window
 * size, say, that has no sensible default).
 */
export function optionDefaults(options: z.ZodObject): Record<string, unknown> {
  const defaults: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(options.shape)) {
    const parsed = (schema as z.ZodType).safeParse(undefined);
    defaults[key] = parsed.success ? parsed.data : "<required>";
  }
  return defaults;
}

function optionLines(section: string, options: z.ZodObject, indent: string): string[] {
  const defaults = optionDefaults(options);
  return Object.entries(options.shape).map(([key, schema]) => {
    const note = (schema as z.ZodType).description ?? DESCRIPTIONS[`${section}.${key}`];
    // An option that is unset by default is shown commented out, so the YAML stays valid.
    if (defaults[key] === undefined) {
      const commented = indent.endsWith("# ") ? indent : `${indent}# `;
      return keyLine(`${commented}${key}`, "<unset>", schema as z.ZodType, note);
    }
    return keyLine(`${indent}${key}`, defaults[key], schema as z.ZodType, note);
  });
}

/** The model's optional MoE section, with its router chosen by name. */
function moeLines(): string[] {
  const moe = unwrap(fieldSchema("model", "moe") as z.ZodType) as z.ZodObject;
  const defaults = optionDefaults(moe);
  const lines = ["  # moe: optional; replaces the MLP of the chosen blocks with an MoE layer"];
  for (const [key, schema] of Object.entries(moe.shape)) {
    if (key === "router") {
      lines.push(
        ...registeredSectionLines("model.moe.router", routers, "  #   ").map((line) =>
          line.replace(/^ {2}# {3}router:/, "  #   router:")
        ),
      );
      continue;
    }
    lines.push(
      keyLine(`  #   ${key}`, defaults[key], schema as z.ZodType, DESCRIPTIONS[`model.moe.${key}`]),
    );
  }
  return lines;
}

/** The model's optional ConceptMoE section. */
function conceptLines(): string[] {
  const concept = unwrap(fieldSchema("model", "concept") as z.ZodType) as z.ZodObject;
  const defaults = optionDefaults(concept);
  const lines = [
    "  # concept: optional; ConceptMoE merges token chunks into concepts for the middle blocks",
  ];
  for (const [key, schema] of Object.entries(concept.shape)) {
    const note = (schema as z.ZodType).description ?? DESCRIPTIONS[`model.concept.${key}`];
    const value = defaults[key] === undefined ? "<unset>" : defaults[key];
    lines.push(keyLine(`  #   ${key}`, value, schema as z.ZodType, note));
  }
  return lines;
}

function keyLine(key: string, value: unknown, schema: z.ZodType | undefined, note?: string) {
  // Nested option objects print on one line, so every key keeps its own commented line.
  const shown = YAML.stringify(value, { collectionStyle: "flow", lineWidth: 0 }).trim();
  const type = schema ? describeSchema(schema) : "";
  const comment = [type, note].filter(Boolean).join("; ");
  return `${key}: ${shown}${comment ? ` # ${comment}` : ""}`;
}

function fieldSchema(section: string | undefined, key: string): z.ZodType | undefined {
  const top = unwrap(configSchema()) as z.ZodObject;
  const parent = section === undefined ? top : unwrap(top.shape[section] as z.ZodType);
  if (!(parent instanceof z.ZodObject)) return undefined;
  return parent.shape[key] as z.ZodType | undefined;
}

/** Describes a field's type and bounds: "integer >= 1", "number in (0, 0.5]", "one of a | b". */
export function describeSchema(schema: z.ZodType): string {
  const inner = unwrap(schema);
  if (inner instanceof z.ZodNumber) {
    const noun = inner.isInt ? "integer" : "number";
    const bag = inner._zod.bag as {
      minimum?: number;
      maximum?: number;
      exclusiveMinimum?: number;
      exclusiveMaximum?: number;
    };
    // z.int() carries the safe-integer range as bounds, which tell a reader nothing.
    const shown = (bound: number | undefined) =>
      bound !== undefined && Math.abs(bound) < Number.MAX_SAFE_INTEGER;
    let low = "";
    if (shown(bag.exclusiveMinimum)) low = `> ${bag.exclusiveMinimum}`;
    else if (shown(bag.minimum)) low = `>= ${bag.minimum}`;
    let high = "";
    if (shown(bag.exclusiveMaximum)) high = `< ${bag.exclusiveMaximum}`;
    else if (shown(bag.maximum)) high = `<= ${bag.maximum}`;
    return [noun, low, high && low ? `and ${high}` : high].filter(Boolean).join(" ");
  }
  if (inner instanceof z.ZodEnum) return `one of ${inner.options.join(" | ")}`;
  if (inner instanceof z.ZodBoolean) return "true or false";
  if (inner instanceof z.ZodString) return "string";
  return "";
}

function unwrap(schema: z.ZodType): z.ZodType {
  let inner = schema;
  while ("innerType" in inner.def) inner = inner.def.innerType as z.ZodType;
  return inner;
}
