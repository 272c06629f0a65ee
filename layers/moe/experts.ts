/**
 * Routed experts stored as stacked weights and run as grouped matrix products: the rows of each
 * expert are contiguous in the expert-sorted buffer, and one `groupedMatmul` per projection runs
 * every expert on its own rows.
 */

import type { Backend } from "../../kernels/backend.ts";
import { gelu, groupedMatmul, mul, type Rng, silu, type Tensor } from "../../tensor/mod.ts";
import type { MlpKind } from "../mlp.ts";
import { Module, normalParameter } from "../module.ts";

export interface GroupedExpertsOptions {
  numExperts: number;
  dModel: number;
  /** Hidden width of each expert. */
  dFF: number;
  kind: MlpKind;
  initStd: number;
  outputInitStd: number;
}

/**
 * E experts of the form down(gelu(up(x))) or down(silu(gate(x)) ⊙ up(x)), with `up` and `gate`
 * [E, dFF, dModel] and `down` [E, dModel, dFF], each stored [out, in] per expert.
 */
export class GroupedExperts extends Module {
  readonly up: Tensor;
  readonly gate: Tensor | null;
  readonly down: Tensor;

  constructor(backend: Backend, rng: Rng, readonly options: GroupedExpertsOptions) {
    super();
    const { numExperts, dModel, dFF, initStd } = options;
    this.up = this.addParameter(
      "up",
      normalParameter(backend, rng, [numExperts, dFF, dModel], initStd),
    );
    this.gate = options.kind === "swiglu"
      ? this.addParameter("gate", normalParameter(backend, rng, [numExperts, dFF, dModel], initStd))
      : null;
    this.down = this.addParameter(
      "down",
      normalParameter(backend, rng, [numExperts, dModel, dFF], options.outputInitStd),
    );
  }

  /** Expert outputs [rows, dModel] for expert-sorted rows xs [rows, dModel] and group offsets. */
  forward(xs: Tensor, offsets: Tensor): Tensor {
    const up = groupedMatmul(xs, this.up, offsets);
    const hidden = this.gate === null
      ? gelu(up)
      : mul(silu(groupedMatmul(xs, this.gate, offsets)), up);
    return groupedMatmul(hidden, this.down, offsets);
  }
}
