/**
 * The attention variants by name: each has a zod schema for its options and a factory. A model
 * config selects one as `model.attention: { name: <variant>, ...options }`; `mha` with default
 * options is moelab's original attention.
 */

import { z } from "zod";
import type { AttentionContext, AttentionModule } from "./base.ts";
import { createDma, dmaOptionsSchema } from "./dma.ts";
import { createGaam, gaamOptionsSchema } from "./gaam.ts";
import { createMha, mhaOptionsSchema } from "./mha.ts";
import { createMla, mlaOptionsSchema } from "./mla.ts";
import { createMoh, mohOptionsSchema } from "./moh.ts";
import {
  createGated,
  createKeyBias,
  createSigmoid,
  createSinkLogit,
  gatedOptionsSchema,
  keyBiasOptionsSchema,
  sigmoidOptionsSchema,
  sinkLogitOptionsSchema,
} from "./sinks.ts";
import { createMoa, createWindow, moaOptionsSchema, windowOptionsSchema } from "./window.ts";

/** A registered variant: its options schema (without `name`) and its factory. */
export interface AttentionVariant<S extends z.ZodObject = z.ZodObject> {
  schema: S;
  create(context: AttentionContext, options: z.infer<S>): AttentionModule;
}

function variant<S extends z.ZodObject>(
  schema: S,
  create: (context: AttentionContext, options: z.infer<S>) => AttentionModule,
): AttentionVariant<S> {
  return { schema, create };
}

export const attentionVariants = {
  mha: variant(mhaOptionsSchema, createMha),
  window: variant(windowOptionsSchema, createWindow),
  moa: variant(moaOptionsSchema, createMoa),
  sigmoid: variant(sigmoidOptionsSchema, createSigmoid),
  keyBias: variant(keyBiasOptionsSchema, createKeyBias),
  sinkLogit: variant(sinkLogitOptionsSchema, createSinkLogit),
  gated: variant(gatedOptionsSchema, createGated),
  moh: variant(mohOptionsSchema, createMoh),
  dma: variant(dmaOptionsSchema, createDma),
  mla: variant(mlaOptionsSchema, createMla),
  gaam: variant(gaamOptionsSchema, createGaam),
} as const;

export type AttentionName = keyof typeof attentionVariants;

const extraVariants = new Map<string, AttentionVariant>();

/** Adds an attention variant that `createAttention` can build; throws when the name is taken. */
export function registerAttentionVariant(name: string, variant: AttentionVariant): void {
  if (name in attentionVariants || extraVariants.has(name)) {
    throw new Error(`attention variant "${name}" is already registered; choose another name`);
  }
  extraVariants.set(name, variant);
}

const names = Object.keys(attentionVariants) as [AttentionName, ...AttentionName[]];

/**
 * `model.attention`: `{ name, ...options }`, where the options are those of the named variant.
 * An unknown name fails with the list of valid names; an unknown option fails as unrecognized.
 */
export const attentionSpecSchema = z.discriminatedUnion("name", [
  mhaOptionsSchema.extend({ name: z.literal("mha") }),
  windowOptionsSchema.extend({ name: z.literal("window") }),
  moaOptionsSchema.extend({ name: z.literal("moa") }),
  sigmoidOptionsSchema.extend({ name: z.literal("sigmoid") }),
  keyBiasOptionsSchema.extend({ name: z.literal("keyBias") }),
  sinkLogitOptionsSchema.extend({ name: z.literal("sinkLogit") }),
  gatedOptionsSchema.extend({ name: z.literal("gated") }),
  mohOptionsSchema.extend({ name: z.literal("moh") }),
  dmaOptionsSchema.extend({ name: z.literal("dma") }),
  mlaOptionsSchema.extend({ name: z.literal("mla") }),
  gaamOptionsSchema.extend({ name: z.literal("gaam") }),
]);

/** The spec as written in a config, before defaults are applied. */
export type AttentionSpec = { name: string } & Record<string, unknown>;

/** The default: moelab's original multi-head attention. */
export const DEFAULT_ATTENTION: AttentionSpec = { name: "mha" };

/**
 * Validates a spec against its variant's schema and builds the module. Errors name the config
 * path of the option, its value and the valid choices.
 */
export function createAttention(
  spec: AttentionSpec,
  context: AttentionContext,
): AttentionModule {
  const path = context.path ?? "model.attention";
  const entry: AttentionVariant | undefined = attentionVariants[spec.name as AttentionName] ??
    extraVariants.get(spec.name);
  if (entry === undefined) {
    throw new Error(
      `${path}.name is ${JSON.stringify(spec.name)}; choose one of ${
        [...names, ...extraVariants.keys()].join(", ")
      }`,
    );
  }
  const { name: _name, ...options } = spec;
  const parsed = entry.schema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = [path, ...issue.path.map(String)].join(".");
    const value = issue.path.reduce<unknown>(
      (v, key) => (v as Record<PropertyKey, unknown> | undefined)?.[key as PropertyKey],
      options,
    );
    throw new Error(`${where} is ${JSON.stringify(value)}: ${issue.message}`);
  }
  return entry.create(context, parsed.data);
}
