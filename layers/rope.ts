/**
 * Rotary position embedding tables (Su et al., "RoFormer", 2021): for position t and pair i,
 * θ = t · base^(−2i/headDim), and pairs are (i, i + headDim/2) as in GPT-NeoX and Llama.
 */

import type { Backend } from "../kernels/backend.ts";
import { Tensor } from "../tensor/mod.ts";

/** cos and sin tables of shape [seqLen, headDim/2], kept for the model's lifetime. */
export class RopeTables {
  readonly #cache = new Map<number, { cos: Tensor; sin: Tensor }>();

  constructor(readonly backend: Backend, readonly headDim: number, readonly base = 10000) {
    if (headDim % 2 !== 0) {
      throw new Error(`rope needs an even head size, got ${headDim}`);
    }
  }

  get(seqLen: number): { cos: Tensor; sin: Tensor } {
    let tables = this.#cache.get(seqLen);
    if (tables === undefined) {
      const half = this.headDim / 2;
      const cos = new Float64Array(seqLen * half);
      const sin = new Float64Array(seqLen * half);
      for (let t = 0; t < seqLen; t++) {
        for (let i = 0; i < half; i++) {
          const theta = t * Math.pow(this.base, (-2 * i) / this.headDim);
          cos[t * half + i] = Math.cos(theta);
          sin[t * half + i] = Math.sin(theta);
        }
      }
      tables = {
        cos: Tensor.fromArray(this.backend, cos, [seqLen, half], "f32"),
        sin: Tensor.fromArray(this.backend, sin, [seqLen, half], "f32"),
      };
      tables.cos.persistent = true;
      tables.sin.persistent = true;
      this.#cache.set(seqLen, tables);
    }
    return tables;
  }

  dispose(): void {
    for (const { cos, sin } of this.#cache.values()) {
      cos.dispose();
      sin.dispose();
    }
    this.#cache.clear();
  }
}
