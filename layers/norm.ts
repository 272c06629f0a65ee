/** Normalisation layers over the last axis. */

import type { Backend } from "../kernels/backend.ts";
import { layerNorm, rmsNorm, Tensor } from "../tensor/mod.ts";
import { constantParameter, Module } from "./module.ts";

export class RMSNorm extends Module {
  readonly weight: Tensor;

  constructor(backend: Backend, dim: number, readonly eps: number) {
    super();
    this.weight = this.addParameter("weight", constantParameter(backend, [dim], 1));
  }

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;

  constructor(backend: Backend, dim: number, readonly eps: number) {
    super();
    this.weight = this.addParameter("weight", constantParameter(backend, [dim], 1));
    this.bias = this.addParameter("bias", constantParameter(backend, [dim], 0));
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export type NormKind = "rmsnorm" | "layernorm";

/** Builds the normalisation layer named in a config. */
export function createNorm(
  backend: Backend,
  kind: NormKind,
  dim: number,
  eps: number,
): RMSNorm | LayerNorm {
  return kind === "rmsnorm" ? new RMSNorm(backend, dim, eps) : new LayerNorm(backend, dim, eps);
}
