/** Linear and Embedding layers. */

import type { Backend } from "../kernels/backend.ts";
import { add, embedding, matmul, Rng, Tensor } from "../tensor/mod.ts";
import { constantParameter, Module, normalParameter } from "./module.ts";

export interface LinearOptions {
  bias?: boolean;
  /** Standard deviation of the normal initialisation. */
  initStd: number;
}

/** y = x · Wᵀ + b, with W stored as [out, in] as in PyTorch. */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(
    backend: Backend,
    rng: Rng,
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: LinearOptions,
  ) {
    super();
    this.weight = this.addParameter(
      "weight",
      normalParameter(backend, rng, [outFeatures, inFeatures], options.initStd),
    );
    this.bias = options.bias
      ? this.addParameter("bias", constantParameter(backend, [outFeatures], 0))
      : null;
  }

  forward(x: Tensor): Tensor {
    const y = matmul(x, this.weight, { transB: true });
    return this.bias === null ? y : add(y, this.bias);
  }
}

/** A lookup table of `vocab` vectors of size `dim`. */
export class Embedding extends Module {
  readonly weight: Tensor;

  constructor(
    backend: Backend,
    rng: Rng,
    readonly vocab: number,
    readonly dim: number,
    initStd: number,
  ) {
    super();
    this.weight = this.addParameter("weight", normalParameter(backend, rng, [vocab, dim], initStd));
  }

  /** Vectors for i32 ids of any shape; returns [...ids.shape, dim]. */
  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids);
  }
}
