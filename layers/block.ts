/** The pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x)). */

import type { Backend } from "../kernels/backend.ts";
import { add, Rng, Tensor } from "../tensor/mod.ts";
import { CausalSelfAttention } from "./attention/mha.ts";
import { Mlp, type MlpKind } from "./mlp.ts";
import { Module } from "./module.ts";
import { createNorm, type LayerNorm, type NormKind, type RMSNorm } from "./norm.ts";
import type { RopeTables } from "./rope.ts";

export interface BlockOptions {
  dModel: number;
  numHeads: number;
  dFF: number;
  mlp: MlpKind;
  norm: NormKind;
  normEps: number;
  initStd: number;
  outputInitStd: number;
  rope: RopeTables | null;
}

export class DecoderBlock extends Module {
  readonly attentionNorm: RMSNorm | LayerNorm;
  readonly attention: CausalSelfAttention;
  readonly mlpNorm: RMSNorm | LayerNorm;
  readonly mlp: Mlp;

  constructor(backend: Backend, rng: Rng, options: BlockOptions) {
    super();
    const { dModel, norm, normEps } = options;
    this.attentionNorm = this.addModule(
      "attentionNorm",
      createNorm(backend, norm, dModel, normEps),
    );
    this.attention = this.addModule("attention", new CausalSelfAttention(backend, rng, options));
    this.mlpNorm = this.addModule("mlpNorm", createNorm(backend, norm, dModel, normEps));
    this.mlp = this.addModule(
      "mlp",
      new Mlp(backend, rng, {
        dModel,
        dFF: options.dFF,
        kind: options.mlp,
        initStd: options.initStd,
        outputInitStd: options.outputInitStd,
      }),
    );
  }

  forward(x: Tensor): Tensor {
    const h = add(x, this.attention.forward(this.attentionNorm.forward(x)));
    return add(h, this.mlp.forward(this.mlpNorm.forward(h)));
  }
}
