/**
 * The `Router` contract of the MoE layer, and the balance losses that token-choice routers share.
 *
 * Every router returns a dispatch plan: a flat list of `count` assignments (token, expert, weight)
 * in i32/f32 tensors, with expert −1 marking an empty slot. Token choice, expert choice, hash and
 * random routing all fit this form, so `MoeLayer` has one execution path for all of them.
 */

import type { Backend } from "../../kernels/backend.ts";
import {
  add,
  div,
  exp,
  log,
  max,
  mean,
  meanAll,
  mul,
  type Rng,
  scale,
  scatterAddRows,
  square,
  sub,
  sum,
  sumAll,
  Tensor,
} from "../../tensor/mod.ts";
import { Module } from "../module.ts";

/** What a router sees of one layer's input. */
export interface RouteInput {
  /** Token states [n, dModel] with n = batch·seqLen, sequence after sequence. */
  x: Tensor;
  batch: number;
  seqLen: number;
  /** i32 token ids [n] when the model has them (language models); hash routing needs them. */
  tokenIds: Tensor | null;
  /**
   * Attention probabilities [batch, numHeads, seqLen, seqLen] of the same block, given only when
   * the router's `needsAttention` is true and the block can produce them.
   */
  attentionProbs?: Tensor | null;
}

/** A router's decision for one batch. */
export interface DispatchPlan {
  /** i32 [count]: the token of each assignment. */
  tokens: Tensor;
  /** i32 [count]: the expert of each assignment, −1 for an empty slot. */
  experts: Tensor;
  /** f32 [count]: the combine weight of each assignment; the router's task gradient flows here. */
  weights: Tensor;
  /** f32 [count]: the order in which the `probability` drop policy keeps assignments (default: weights). */
  priority: Tensor | null;
  /** [n, numExperts] router probabilities for diagnostics; null for routers without any. */
  probs: Tensor | null;
  /** Scalar auxiliary losses by name, already multiplied by their weights. */
  auxLosses: Record<string, Tensor>;
  /**
   * K when assignment a is slot a mod K of token ⌊a / K⌋ with slots in rank order (token choice),
   * null otherwise (expert choice).
   */
  slotsPerToken: number | null;
  /** f32 [n, 1]: multiplies the shared experts' output of each token; absent means 1. */
  sharedGate?: Tensor | null;
}

/** Sizes and loss weights that the MoE layer gives every router factory. */
export interface RouterContext {
  backend: Backend;
  rng: Rng;
  dModel: number;
  /** Routed experts. */
  numExperts: number;
  /** Routed experts per token (token-choice routers). */
  topK: number;
  /** Multiplier of the load-balance loss (α). */
  auxLossWeight: number;
  /** Multiplier of the router z-loss. */
  zLossWeight: number;
  /** Standard deviation of the model's weight initialisation. */
  initStd: number;
  /** Vocabulary size, when tokens have ids. */
  vocabSize: number | null;
  /** Block index of the layer, for per-layer options; null for a layer used outside a model. */
  layerIndex?: number | null;
  /** Blocks in the model, for per-layer schedules; null for a layer used outside a model. */
  numLayers?: number | null;
  /** Always-on shared experts of the layer (after segmentation). */
  sharedExperts?: number;
}

/**
 * A router: a module whose parameters are named under `router` by the MoE layer, so optimizer
 * rules can find them (`blocks.0.moe.router.weight`).
 */
export abstract class Router extends Module {
  abstract route(input: RouteInput): DispatchPlan;

  /** True when `route` needs `attentionProbs`, so the block runs attention with probabilities. */
  get needsAttention(): boolean {
    return false;
  }

  /**
   * True when a token's routing depends on later tokens of its sequence, which leaks the future
   * into a causal language model.
   */
  get usesLaterTokens(): boolean {
    return false;
  }

  /** Called by the trainer after each optimizer update; routers with state update it here. */
  afterStep(): void {}

  /**
   * Called by the trainer before the forward of training step `step` (0-based) out of
   * `totalSteps`; routers with a schedule over training read it here.
   */
  setStep(_step: number, _totalSteps: number): void {}
}

/** Uploads the token of each token-choice slot: a ↦ ⌊a / k⌋ for a < n·k. */
export function slotTokens(backend: Backend, n: number, k: number): Tensor {
  const tokens = new Int32Array(n * k);
  for (let a = 0; a < tokens.length; a++) tokens[a] = Math.floor(a / k);
  return Tensor.fromArray(backend, tokens, [n * k], "i32");
}

/** Assignments per expert as f32 [numExperts]; empty (−1) slots are not counted. No gradient. */
export function expertCounts(experts: Tensor, numExperts: number): Tensor {
  const ones = Tensor.full(experts.backend, [experts.size, 1], 1);
  return scatterAddRows(ones, experts, numExperts).reshape([numExperts]);
}

/**
 * The Switch Transformer load-balancing loss without its α: E · Σ_e f_e · P_e, where f_e is the
 * fraction of the n·k assignments that go to expert e and P_e the mean router probability of e.
 * It is 1 at perfect balance, and its gradient flows through P only (f is a hard count).
 */
export function loadBalanceLoss(probs: Tensor, experts: Tensor, k: number): Tensor {
  const [n, numExperts] = probs.shape;
  const f = scale(expertCounts(experts, numExperts), 1 / (n * k));
  const p = mean(probs, 0);
  return scale(sumAll(mul(f, p)), numExperts);
}

/**
 * DeepSeekMoE's device-level balance loss without its α2: the routed experts are split into
 * `groups` equal consecutive groups, and the loss is Σ_d f'_d · P'_d with f'_d the mean of the
 * group's expert fractions (normalised as in `loadBalanceLoss`, so each is 1 at balance) and
 * P'_d the sum of the group's mean probabilities.
 */
export function deviceBalanceLoss(
  probs: Tensor,
  experts: Tensor,
  k: number,
  groups: number,
): Tensor {
  const [n, numExperts] = probs.shape;
  const perGroup = numExperts / groups;
  const f = scale(expertCounts(experts, numExperts), numExperts / (n * k));
  const groupF = mean(f.reshape([groups, perGroup]), 1);
  const groupP = sum(mean(probs, 0).reshape([groups, perGroup]), 1);
  return sumAll(mul(groupF, groupP));
}

/**
 * The ST-MoE router z-loss: the mean over tokens of (log Σ_e exp z_e)². The row maximum is
 * subtracted before exp, so logits [1000, 0] give 1e6 in float32 instead of overflowing.
 */
export function zLoss(logits: Tensor): Tensor {
  const rowMax = max(logits, -1, true).detach();
  const lse = add(log(sum(exp(sub(logits, rowMax)), -1, true)), rowMax);
  return meanAll(square(lse));
}

/** Scores normalised to sum to 1 per token (sigmoid scores become a distribution). */
export function normalizeRows(scores: Tensor): Tensor {
  return div(scores, sum(scores, -1, true));
}
