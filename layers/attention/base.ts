/**
 * The parts shared by every attention variant: the `AttentionModule` contract, the context a
 * factory receives from the model, and the configuration error that names the option path, its
 * value and a fix.
 */

import type { Backend } from "../../kernels/backend.ts";
import type { Rng, Tensor } from "../../tensor/mod.ts";
import { Module } from "../module.ts";
import type { RopeTables } from "../rope.ts";

/** The output [B, T, dModel] and, on request, the attention probabilities [B, H, T, T]. */
export interface AttentionOutput {
  output: Tensor;
  probs?: Tensor;
}

/** The sizes and tables that the model passes to an attention factory. */
export interface AttentionContext {
  backend: Backend;
  rng: Rng;
  dModel: number;
  numHeads: number;
  initStd: number;
  /** Initialisation std of the output projection (GPT-2 scales it down with depth). */
  outputInitStd: number;
  /** Rotary tables for head size dModel / numHeads, or null when the model uses no rotary positions. */
  rope: RopeTables | null;
  /** Maximum sequence length of the model, for checks such as DMA's keep < seqLen. */
  maxSeqLen?: number;
  /** Config path of the attention options, used in error messages (default "model.attention"). */
  path?: string;
  /**
   * True (the default) hides later keys from each query, as a decoder needs. False lets every
   * query see every key, as in an encoder. Variants that are defined over past keys reject false.
   */
  causal?: boolean;
}

/**
 * Self-attention over [B, T, dModel], causal unless the context sets `causal: false`. `forward`
 * returns the output; `forwardWithProbs` also returns the probabilities for probes and routers.
 * Variants with an auxiliary loss (MoH's head load balance) leave it, already multiplied by its
 * weight, in `auxLoss` after each forward.
 */
export abstract class AttentionModule extends Module {
  /** The registered variant name, as in a config's `model.attention.name`. */
  abstract readonly variant: string;
  abstract readonly numHeads: number;
  /** The weighted auxiliary loss of the latest forward, or null when the variant has none. */
  auxLoss: Tensor | null = null;
  /** When true, `forward` also materialises the probabilities into `probs` (for probes). */
  recordProbs = false;
  /** Probabilities [B, H, T, T] of the latest forward while `recordProbs` is on, else null. */
  probs: Tensor | null = null;

  abstract forward(x: Tensor): Tensor;

  /**
   * The output and the probabilities [B, H, T, T] of one forward. Probabilities of fused paths
   * come from a separate materialising kernel and carry no gradient.
   */
  abstract forwardWithProbs(x: Tensor): AttentionOutput;
}

/** Invalid attention options; the message names the config path, the value and a fix. */
export class AttentionConfigError extends Error {
  override name = "AttentionConfigError";
}

/** Returns the config path of an option, e.g. `model.attention.numKvHeads`. */
export function optionPath(context: AttentionContext, option: string): string {
  return `${context.path ?? "model.attention"}.${option}`;
}

/**
 * Throws when the context requests non-causal attention from a variant that is defined over past
 * keys only; `reason` names what makes it causal.
 */
export function requireCausal(context: AttentionContext, variant: string, reason: string): void {
  if (context.causal !== false) return;
  throw new AttentionConfigError(
    `${optionPath(context, "name")} is ${variant}, which ${reason}, but this model's attention ` +
      "is non-causal; choose mha, moh, gated, sigmoid, sinkLogit, keyBias or mla",
  );
}

/** Throws unless numHeads divides dModel, naming both values. */
export function checkHeads(context: AttentionContext): number {
  const { dModel, numHeads } = context;
  if (!Number.isInteger(numHeads) || numHeads < 1 || dModel % numHeads !== 0) {
    throw new AttentionConfigError(
      `model.numHeads is ${numHeads} but dModel is ${dModel}; choose a number of heads that ` +
        `divides ${dModel}`,
    );
  }
  return dModel / numHeads;
}
