/** The position-wise feed-forward network of a transformer block. */

import type { Backend } from "../kernels/backend.ts";
import { gelu, mul, Rng, silu, Tensor } from "../tensor/mod.ts";
import { Linear } from "./linear.ts";
import { Module } from "./module.ts";

export type MlpKind = "gelu" | "swiglu";

export interface MlpOptions {
  dModel: number;
  dFF: number;
  kind: MlpKind;
  initStd: number;
  /** Initialisation std of the output projection (GPT-2 scales it down with depth). */
  outputInitStd: number;
}

/**
 * GELU: down(gelu(up(x))). SwiGLU (Shazeer, "GLU Variants Improve Transformer", 2020):
 * down(silu(gate(x)) ⊙ up(x)).
 */
export class Mlp extends Module {
  readonly up: Linear;
  readonly gate: Linear | null;
  readonly down: Linear;

  constructor(backend: Backend, rng: Rng, readonly options: MlpOptions) {
    super();
    const { dModel, dFF, initStd } = options;
    this.up = this.addModule("up", new Linear(backend, rng, dModel, dFF, { initStd }));
    this.gate = options.kind === "swiglu"
      ? this.addModule("gate", new Linear(backend, rng, dModel, dFF, { initStd }))
      : null;
    this.down = this.addModule(
      "down",
      new Linear(backend, rng, dFF, dModel, { initStd: options.outputInitStd }),
    );
  }

  forward(x: Tensor): Tensor {
    const hidden = this.gate === null
      ? gelu(this.up.forward(x))
      : mul(silu(this.gate.forward(x)), this.up.forward(x));
    return this.down.forward(hidden);
  }
}
