/**
 * The MoE section of a model: which blocks get an MoE layer and how it is shaped, and the
 * resolution of fine-grained segmentation and shared experts into routed sizes.
 */

import type { MlpKind } from "../mlp.ts";
import type { RouterSpec } from "./routers/mod.ts";

export type DropPolicy = "position" | "probability";

/**
 * An MoE spec in DeepSeekMoE's terms. With granularity m, the N experts of width dFF become m·N
 * experts of width dFF/m and a token activates m·K of them; `sharedExperts` K_s of those are
 * always on, leaving m·N − K_s routed experts with m·K − K_s active per token. Parameters and
 * compute therefore stay those of N experts with K active. Example: N = 8, K = 2, m = 2, K_s = 1
 * gives 15 routed experts with 3 active plus 1 shared, each of width dFF/2 ("1+3/15").
 */
export interface MoeSpec {
  /** Blocks whose MLP becomes an MoE layer: all, the odd-numbered ones (1, 3, ...), or a list. */
  layers: "all" | "every-other" | number[];
  /** The router's registered name and options. */
  router: RouterSpec;
  /** N: experts before segmentation, shared ones included. */
  numExperts: number;
  /** K: experts per token before segmentation, shared ones included. */
  topK: number;
  /** Hidden width of one expert before segmentation. */
  dFF: number;
  /** K_s: always-on experts after segmentation (default 0). */
  sharedExperts?: number;
  /** m: fine-grained segmentation factor (default 1). */
  granularity?: number;
  /** Capacity C = ceil(assignments / E · capacityFactor) per expert; null or absent is dropless. */
  capacityFactor?: number | null;
  /** Which assignments a full expert drops: the latest in token order, or the lowest scored. */
  dropPolicy?: DropPolicy;
  /** Expert feed-forward form (default "gelu"). */
  ffn?: MlpKind;
  /** α of the load-balance loss (default 0.01). */
  auxLossWeight?: number;
  /** Multiplier of the router z-loss (default 0). */
  zLossWeight?: number;
}

/** The routed and shared sizes of one MoE layer after segmentation. */
export interface ResolvedMoe {
  routedExperts: number;
  routedTopK: number;
  /** Hidden width of each routed and shared expert. */
  expertDFF: number;
  sharedExperts: number;
  capacityFactor: number | null;
  dropPolicy: DropPolicy;
  ffn: MlpKind;
  auxLossWeight: number;
  zLossWeight: number;
}

function checkPositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`moe.${name} is ${value} but must be a positive integer`);
  }
}

/** Resolves segmentation and shared experts; throws with the offending values when invalid. */
export function resolveMoe(spec: MoeSpec): ResolvedMoe {
  const granularity = spec.granularity ?? 1;
  const shared = spec.sharedExperts ?? 0;
  checkPositiveInteger("numExperts", spec.numExperts);
  checkPositiveInteger("topK", spec.topK);
  checkPositiveInteger("dFF", spec.dFF);
  checkPositiveInteger("granularity", granularity);
  if (!Number.isInteger(shared) || shared < 0) {
    throw new Error(`moe.sharedExperts is ${shared} but must be a non-negative integer`);
  }
  if (spec.dFF % granularity !== 0) {
    throw new Error(
      `moe.dFF is ${spec.dFF} but must be divisible by granularity ${granularity}`,
    );
  }
  const routedExperts = granularity * spec.numExperts - shared;
  const routedTopK = granularity * spec.topK - shared;
  if (routedTopK < 1 || routedTopK > routedExperts) {
    throw new Error(
      `moe: granularity ${granularity} · topK ${spec.topK} − sharedExperts ${shared} leaves ` +
        `${routedTopK} routed experts per token out of ${routedExperts}; it must be between 1 ` +
        `and the routed expert count`,
    );
  }
  const capacityFactor = spec.capacityFactor ?? null;
  if (capacityFactor !== null && !(capacityFactor > 0 && Number.isFinite(capacityFactor))) {
    throw new Error(
      `moe.capacityFactor is ${capacityFactor} but must be a positive number or null`,
    );
  }
  return {
    routedExperts,
    routedTopK,
    expertDFF: spec.dFF / granularity,
    sharedExperts: shared,
    capacityFactor,
    dropPolicy: spec.dropPolicy ?? "position",
    ffn: spec.ffn ?? "gelu",
    auxLossWeight: spec.auxLossWeight ?? 0.01,
    zLossWeight: spec.zLossWeight ?? 0,
  };
}

/** Indices of the blocks that get an MoE layer out of `numLayers`. */
export function moeLayerIndices(layers: MoeSpec["layers"], numLayers: number): number[] {
  if (layers === "all") return Array.from({ length: numLayers }, (_, i) => i);
  if (layers === "every-other") {
    return Array.from({ length: numLayers }, (_, i) => i).filter((i) => i % 2 === 1);
  }
  for (const i of layers) {
    if (!Number.isInteger(i) || i < 0 || i >= numLayers) {
      throw new Error(`moe.layers contains ${i}, but blocks are numbered 0 to ${numLayers - 1}`);
    }
  }
  return [...new Set(layers)].sort((a, b) => a - b);
}
