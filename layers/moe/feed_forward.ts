/**
 * An MoE layer behind the plain feed-forward interface of an encoder block (forecaster, ViT):
 * `forward(x)` returns the layer's output and keeps its weighted auxiliary loss until the owning
 * model collects it with `takeAuxLoss()`.
 */

import type { Backend } from "../../kernels/backend.ts";
import type { Rng, Tensor } from "../../tensor/mod.ts";
import { Module } from "../module.ts";
import { MoeLayer } from "./moe_layer.ts";
import { type MoeSpec, resolveMoe } from "./spec.ts";

export class MoeFeedForward extends Module {
  readonly moe: MoeLayer;
  #auxLoss: Tensor | null = null;

  constructor(
    backend: Backend,
    rng: Rng,
    spec: MoeSpec,
    sizes: { dModel: number; initStd: number; outputInitStd: number },
    placement: { layerIndex: number; numLayers: number },
  ) {
    super();
    this.moe = this.addModule(
      "moe",
      new MoeLayer(backend, rng, {
        ...resolveMoe(spec),
        ...sizes,
        router: spec.router,
        // Series patches have no token ids, so routers that hash ids do not apply.
        vocabSize: null,
        ...placement,
      }),
    );
  }

  forward(x: Tensor): Tensor {
    const { y, auxLoss } = this.moe.forward(x);
    this.#auxLoss = auxLoss;
    return y;
  }

  /** Returns the auxiliary loss of the latest forward once, or null. */
  takeAuxLoss(): Tensor | null {
    const aux = this.#auxLoss;
    this.#auxLoss = null;
    return aux;
  }
}
