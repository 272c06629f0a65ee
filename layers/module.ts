/**
 * `Module`: a named tree of parameters, in the manner of PyTorch's nn.Module.
 *
 * Parameters are persistent tensors that require gradients; `parameters()` lists them under dotted
 * names such as `blocks.0.attention.query.weight`, which optimizer rules, checkpoints and logs use.
 */

import type { Backend } from "../kernels/backend.ts";
import { Rng, Tensor } from "../tensor/mod.ts";

export abstract class Module {
  readonly #params = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();

  /** Registers a parameter under `name` and makes it trainable and persistent. */
  protected addParameter(name: string, tensor: Tensor): Tensor {
    if (this.#params.has(name) || this.#children.has(name)) {
      throw new Error(`module already has a member named "${name}"`);
    }
    tensor.requiresGrad = true;
    tensor.persistent = true;
    tensor.name = name;
    this.#params.set(name, tensor);
    return tensor;
  }

  /** Registers a sub-module under `name`. */
  protected addModule<M extends Module>(name: string, module: M): M {
    if (this.#params.has(name) || this.#children.has(name)) {
      throw new Error(`module already has a member named "${name}"`);
    }
    this.#children.set(name, module);
    return module;
  }

  /** Every parameter of this module and its descendants, by dotted name, in registration order. */
  parameters(prefix = ""): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [name, p] of this.#params) out.set(prefix + name, p);
    for (const [name, child] of this.#children) {
      for (const [n, p] of child.parameters(`${prefix}${name}.`)) out.set(n, p);
    }
    return out;
  }

  /**
   * Non-trainable state of this module itself that checkpoints must keep (a router's selection
   * bias), by local name. Read at each call, since such a tensor may be replaced every step.
   */
  protected ownBuffers(): Map<string, Tensor> {
    return new Map();
  }

  /** Every buffer of this module and its descendants, by dotted name. */
  buffers(prefix = ""): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [name, buffer] of this.ownBuffers()) out.set(prefix + name, buffer);
    for (const [name, child] of this.#children) {
      for (const [n, b] of child.buffers(`${prefix}${name}.`)) out.set(n, b);
    }
    return out;
  }

  /** Total number of trainable elements. */
  parameterCount(): number {
    let n = 0;
    for (const p of this.parameters().values()) n += p.size;
    return n;
  }

  /** Frees every parameter and gradient. */
  dispose(): void {
    for (const p of this.parameters().values()) {
      p.grad?.dispose();
      p.dispose();
    }
  }
}

/** A persistent tensor of normal samples with standard deviation `std`, drawn from `rng`. */
export function normalParameter(
  backend: Backend,
  rng: Rng,
  shape: number[],
  std: number,
): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  return Tensor.fromArray(backend, rng.normalArray(size, std), shape, "f32");
}

/** A persistent tensor filled with `value`. */
export function constantParameter(backend: Backend, shape: number[], value: number): Tensor {
  return Tensor.full(backend, shape, value);
}
