/**
 * The `Optimizer` interface and the per-group options of each algorithm.
 *
 * An optimizer owns parameter groups. Each group runs one algorithm (AdamW, Muon or SGD) with its
 * own base learning rate and weight decay. One `update(lrFactor, gradScale)` steps every group at
 * base lr × lrFactor, so one schedule drives all of them.
 */

import type { HostArray } from "../kernels/backend.ts";
import type { Tensor } from "../tensor/mod.ts";

export type Algorithm = "adamw" | "muon" | "sgd";

/** AdamW with PyTorch semantics (decoupled weight decay, ε added after bias correction). */
export interface AdamWGroupOptions {
  algorithm: "adamw";
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * The rule for Muon's scale of the orthogonalised update of an A×B weight ([out, in], A = rows):
 * - "original" (Keller Jordan's Muon, modded-nanogpt, torch.optim.Muon's default): √max(1, A/B).
 * - "matchRmsAdamW" (Moonshot, "Muon is Scalable"): 0.2·√max(A, B), which gives an update RMS near
 *   0.2, typical of AdamW, so Muon can share AdamW's lr and weight decay.
 */
export type MuonScaleRule = "original" | "matchRmsAdamW";

/** Muon: momentum, Newton–Schulz orthogonalisation, a shape-dependent scale, decoupled decay. */
export interface MuonGroupOptions {
  algorithm: "muon";
  lr: number;
  weightDecay: number;
  /** The momentum μ, or the final μ when `momentumWarmup` is set. */
  momentum: number;
  nesterov: boolean;
  /** Newton–Schulz iterations. */
  nsSteps: number;
  scaleRule: MuonScaleRule;
  /** Linear momentum warm-up from `start` to `momentum` over `warmupSteps` updates, or none. */
  momentumWarmup: { start: number; warmupSteps: number } | null;
}

/** SGD with PyTorch semantics: weight decay is added to the gradient (L2), not decoupled. */
export interface SgdGroupOptions {
  algorithm: "sgd";
  lr: number;
  weightDecay: number;
  /** 0 disables momentum. */
  momentum: number;
  nesterov: boolean;
}

export type GroupOptions = AdamWGroupOptions | MuonGroupOptions | SgdGroupOptions;

/** A parameter group as an optimizer is built from it. */
export interface ParamGroup {
  name: string;
  /** Parameters by dotted name. */
  params: Map<string, Tensor>;
  options: GroupOptions;
}

/** A parameter group as an optimizer reports it. */
export interface GroupInfo {
  readonly name: string;
  readonly paramNames: readonly string[];
  readonly options: Readonly<GroupOptions>;
}

/** A saved state array, bare or with the shape it was saved with (then the shape is checked). */
export type StateArray = HostArray | { shape: readonly number[]; data: HostArray };

export interface Optimizer {
  /** Updates taken so far; the next update is number step + 1 for bias correction. */
  readonly step: number;
  readonly groups: readonly GroupInfo[];

  /**
   * Applies one update to every parameter that has a gradient, at each group's base lr times
   * `lrFactor`. `gradScale`, a one-element tensor, multiplies every gradient first (the clipping
   * coefficient), so clipping needs no readback.
   */
  update(lrFactor: number, gradScale: Tensor | null): void;

  /**
   * Returns the state tensors by name, `<algorithm>.<slot>.<parameter>`, for example
   * `adamw.m.blocks.0.mlp.up.weight` or `muon.momentum.blocks.0.attention.query.weight`.
   * The tensors belong to the optimizer; do not dispose them.
   */
  stateTensors(): Map<string, Tensor>;

  /**
   * Replaces every state tensor with saved values and sets the step counter. Throws when a state
   * name is missing or unexpected, or a size or shape differs.
   */
  loadState(tensors: ReadonlyMap<string, StateArray>, step: number): void;

  /** Releases the state tensors; the optimizer is unusable afterwards. */
  dispose(): void;
}

/** One parameter's update, as a group's algorithm receives it. */
export interface ParamUpdate {
  name: string;
  param: Tensor;
  grad: Tensor;
  /** The algorithm's state tensors of this parameter by slot name, updated in place. */
  state: Map<string, Tensor>;
  /** The scheduled learning rate: base lr × lrFactor. */
  lr: number;
  gradScale: Tensor | null;
  /** The number of this update, counting from 1. */
  step: number;
}
