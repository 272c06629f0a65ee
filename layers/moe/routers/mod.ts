/**
 * The built-in routers: name, one-line summary, zod options schema (every option has a default)
 * and factory. The experiment registry registers these entries; `createRouter` builds one by name.
 */

import type { z } from "zod";
import type { Router, RouterContext } from "../router.ts";
import { auxFreeOptions, createAuxFreeRouter } from "./aux_free.ts";
import { createDeepseekRouter, deepseekOptions } from "./deepseek.ts";
import { createExpertChoiceRouter, expertChoiceOptions } from "./expert_choice.ts";
import { createHashRouter, hashOptions } from "./hash.ts";
import { attentionRouterOptions, createAttentionRouter } from "./attention.ts";
import { createProgressiveRouter, progressiveOptions } from "./progressive.ts";
import { createRandomRouter, randomOptions } from "./random.ts";
import { createSegmentRouter, segmentOptions } from "./segment.ts";
import { createSimilarityRouter, similarityOptions } from "./similarity.ts";
import { createSoftmaxTopKRouter, softmaxTopKOptions } from "./softmax_topk.ts";

export type RouterFactory = (context: RouterContext, options: Record<string, unknown>) => Router;

export interface RouterEntry {
  name: string;
  summary: string;
  options: z.ZodObject;
  create: RouterFactory;
}

export const ROUTERS: readonly RouterEntry[] = [
  {
    name: "softmax-topk",
    summary: "token-choice top-K over softmax or sigmoid scores, Switch balance loss and z-loss",
    options: softmaxTopKOptions,
    create: createSoftmaxTopKRouter,
  },
  {
    name: "aux-free",
    summary: "top-K with a per-expert selection bias updated toward balance after each step",
    options: auxFreeOptions,
    create: createAuxFreeRouter,
  },
  {
    name: "deepseek",
    summary: "DeepSeekMoE: raw softmax gates, expert- and device-level balance losses",
    options: deepseekOptions,
    create: createDeepseekRouter,
  },
  {
    name: "expert-choice",
    summary: "each expert takes its top-c tokens among the batch's tokens at each position",
    options: expertChoiceOptions,
    create: createExpertChoiceRouter,
  },
  {
    name: "hash",
    summary: "fixed random table from token id to experts; nothing learned",
    options: hashOptions,
    create: createHashRouter,
  },
  {
    name: "random",
    summary: "uniformly random experts per token on every forward; nothing learned",
    options: randomOptions,
    create: createRandomRouter,
  },
  {
    name: "similarity",
    summary:
      "top-K over expert distributions mixed across causally similar tokens (Graph of Tokens)",
    options: similarityOptions,
    create: createSimilarityRouter,
  },
  {
    name: "attention",
    summary: "top-K over expert distributions mixed by the block's attention probabilities",
    options: attentionRouterOptions,
    create: createAttentionRouter,
  },
  {
    name: "progressive",
    summary: "softmax top-K whose K falls per layer over training (Sigma-MoE-Tiny schedule)",
    options: progressiveOptions,
    create: createProgressiveRouter,
  },
  {
    name: "segment",
    summary: "Seg-MoE: segments of ω tokens routed as one unit; sees later tokens of a segment",
    options: segmentOptions,
    create: createSegmentRouter,
  },
];

const extraRouters: RouterEntry[] = [];

/** Adds a router to the table `createRouter` builds from; throws when the name is taken. */
export function registerRouter(entry: RouterEntry): void {
  if ([...ROUTERS, ...extraRouters].some((r) => r.name === entry.name)) {
    throw new Error(`router "${entry.name}" is already registered; choose another name`);
  }
  extraRouters.push(entry);
}

/** The router spec of a config: its name plus its options. */
export interface RouterSpec {
  name: string;
  [option: string]: unknown;
}

/** Builds the router named in `spec`; unknown names and options are rejected with the choices. */
export function createRouter(spec: RouterSpec, context: RouterContext): Router {
  const all = [...ROUTERS, ...extraRouters];
  const entry = all.find((r) => r.name === spec.name);
  if (entry === undefined) {
    throw new Error(
      `router "${spec.name}" is not registered; choose one of ${all.map((r) => r.name).join(", ")}`,
    );
  }
  const { name: _name, ...options } = spec;
  return entry.create(context, options);
}
