/**
 * AdamW (Loshchilov and Hutter, "Decoupled Weight Decay Regularization", 2019) with PyTorch's
 * semantics: bias-corrected moments, ε added after the square root of the bias-corrected second
 * moment, and weight decay applied to the parameter directly at the scheduled lr rather than
 * through the gradient. The step runs as the backend's fused `adamw` kernel.
 */

import { Tensor } from "../tensor/mod.ts";
import { persistentZeros } from "./_state.ts";
import type { AdamWGroupOptions, ParamUpdate } from "./optimizer.ts";

/** The state slots AdamW keeps per parameter: first and second moments. */
export const ADAMW_SLOTS: readonly string[] = ["m", "v"];

/** Decay only matrices that are not embeddings: norms, biases and lookup tables are exempt. */
export function defaultDecay(name: string, param: Tensor): boolean {
  return param.rank >= 2 && !/embedding/i.test(name);
}

/** Applies one AdamW step to one parameter in place. */
export function adamwUpdate(update: ParamUpdate, options: AdamWGroupOptions): void {
  const { name, param, grad, state, lr, gradScale, step } = update;
  const m = state.get("m");
  const v = state.get("v");
  if (m === undefined || v === undefined) {
    throw new Error(`adamw: parameter ${name} has no moment buffers`);
  }

  const { beta1, beta2, eps, weightDecay } = options;
  param.backend.adamw(
    param.storage,
    grad.storage,
    m.storage,
    v.storage,
    gradScale?.storage ?? null,
    {
      lr,
      beta1,
      beta2,
      eps,
      weightDecay,
      step,
    },
  );
}

/** Flat AdamW hyperparameters of the single-group `AdamW` class. */
export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface ParamEntry {
  name: string;
  param: Tensor;
  /** Whether weight decay applies; PyTorch recipes exempt norms, biases and embeddings. */
  decay: boolean;
}

/**
 * AdamW over all parameters with one set of options, taking the absolute learning rate in
 * `update`.
 *
 * @deprecated Use `createOptimizer` from optim/create.ts, whose `update` takes a schedule factor
 * and whose state the checkpoint code saves.
 */
export class AdamW {
  /** Number of updates taken; the next update uses step + 1 for bias correction. */
  step = 0;
  readonly entries: ParamEntry[];
  readonly #m = new Map<Tensor, Tensor>();
  readonly #v = new Map<Tensor, Tensor>();

  constructor(params: Map<string, Tensor>, readonly options: AdamWOptions) {
    this.entries = [...params].map(([name, param]) => ({
      name,
      param,
      decay: defaultDecay(name, param),
    }));
    for (const { name, param } of this.entries) {
      this.#m.set(param, persistentZeros(param, `${name}.adam_m`));
      this.#v.set(param, persistentZeros(param, `${name}.adam_v`));
    }
  }

  /**
   * Applies one update at learning rate `lr` to every parameter with a gradient. `gradScale`, a
   * one-element tensor, multiplies every gradient first (the clipping coefficient).
   */
  update(lr: number, gradScale: Tensor | null = null): void {
    this.step++;
    const { beta1, beta2, eps, weightDecay } = this.options;
    for (const { param, decay } of this.entries) {
      if (param.grad === null) continue;
      param.backend.adamw(
        param.storage,
        param.grad.storage,
        this.#m.get(param)!.storage,
        this.#v.get(param)!.storage,
        gradScale?.storage ?? null,
        { lr, beta1, beta2, eps, weightDecay: decay ? weightDecay : 0, step: this.step },
      );
    }
  }

  /** Returns the first and second moments by parameter name. */
  state(): Map<string, { m: Tensor; v: Tensor }> {
    return new Map(
      this.entries.map((
        { name, param },
      ) => [name, { m: this.#m.get(param)!, v: this.#v.get(param)! }]),
    );
  }

  dispose(): void {
    for (const t of [...this.#m.values(), ...this.#v.values()]) t.dispose();
  }
}
