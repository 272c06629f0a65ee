/**
 * `Tensor`: a shaped view of backend storage that remembers how it was computed.
 *
 * Tensors are immutable values. An op returns a new tensor whose `node` contains the op's inputs and
 * the closure that maps the output gradient to input gradients, written beside the forward math
 * in the op's module. Storage is reference-counted so that `reshape` is free: views share one
 * storage, and the storage returns to the backend's pool when the last view is disposed.
 */

import type { Backend, DType, HostArray, Storage } from "../kernels/backend.ts";
import { currentScope } from "./scope.ts";
import { formatShape, sizeOf } from "./shape.ts";

/** The op that computed a tensor: its inputs and its gradient rule. */
export interface GradNode {
  op: string;
  inputs: Tensor[];
  /** Maps the output gradient to one gradient per input (null where an input needs none). */
  backward(dy: Tensor): (Tensor | null)[];
}

/** Storage shared by a tensor and its reshaped views. */
class SharedStorage {
  refs = 1;
  constructor(readonly storage: Storage) {}
}

let gradEnabled = true;

/** Runs `fn` without recording gradients, as during evaluation. */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly backend: Backend;
  requiresGrad: boolean;
  grad: Tensor | null = null;
  node: GradNode | null = null;
  /** A human-readable name, used in error messages (parameters carry their dotted name). */
  name = "";
  /** Excluded from the enclosing scope's clean-up, e.g. parameters, gradients, optimizer state. */
  persistent = false;
  #shared: SharedStorage | null;

  private constructor(
    backend: Backend,
    shared: SharedStorage,
    shape: readonly number[],
    dtype: DType,
    requiresGrad: boolean,
  ) {
    this.backend = backend;
    this.#shared = shared;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.requiresGrad = requiresGrad;
    currentScope()?.track(this);
  }

  /** Wraps a storage that the caller hands over; the tensor now owns it. */
  static fromStorage(
    backend: Backend,
    storage: Storage,
    shape: readonly number[],
    dtype: DType = storage.dtype,
  ): Tensor {
    if (storage.size !== sizeOf(shape)) {
      throw new Error(
        `storage of ${storage.size} elements cannot have shape ${formatShape(shape)} ` +
          `(${sizeOf(shape)} elements)`,
      );
    }
    return new Tensor(backend, new SharedStorage(storage), shape, dtype, false);
  }

  /** Uploads host data. Float arrays become f32 tensors unless `dtype` names another type. */
  static fromArray(
    backend: Backend,
    data: HostArray | number[],
    shape: readonly number[],
    dtype: DType = data instanceof Int32Array ? "i32" : "f32",
  ): Tensor {
    const array = Array.isArray(data)
      ? (dtype === "i32" ? Int32Array.from(data) : Float64Array.from(data))
      : data;
    if (array.length !== sizeOf(shape)) {
      throw new Error(
        `${array.length} values cannot fill shape ${formatShape(shape)} (${
          sizeOf(shape)
        } elements)`,
      );
    }
    return Tensor.fromStorage(backend, backend.upload(array, dtype), shape, dtype);
  }

  static full(backend: Backend, shape: readonly number[], value: number): Tensor {
    const storage = backend.alloc(sizeOf(shape), "f32");
    backend.fill(storage, value);
    return Tensor.fromStorage(backend, storage, shape, "f32");
  }

  static zeros(backend: Backend, shape: readonly number[]): Tensor {
    return Tensor.full(backend, shape, 0);
  }

  get storage(): Storage {
    if (this.#shared === null) {
      throw new Error(`tensor ${this.describe()} was used after it was disposed`);
    }
    return this.#shared.storage;
  }

  get size(): number {
    return sizeOf(this.shape);
  }

  get rank(): number {
    return this.shape.length;
  }

  get disposed(): boolean {
    return this.#shared === null;
  }

  /** A new tensor of another shape over the same storage. Records its gradient rule. */
  reshape(shape: readonly number[]): Tensor {
    const resolved = resolveReshape(this.shape, shape);
    if (this.#shared === null) throw new Error(`cannot reshape disposed tensor ${this.describe()}`);
    this.#shared.refs++;
    const out = new Tensor(
      this.backend,
      this.#shared,
      resolved,
      this.dtype,
      this.requiresGrad && gradEnabled,
    );
    if (out.requiresGrad) {
      const inputShape = this.shape;
      out.node = {
        op: "reshape",
        inputs: [this],
        backward: (dy) => [dy.reshape(inputShape)],
      };
    }
    return out;
  }

  /** A view that shares storage but has no gradient history. */
  detach(): Tensor {
    if (this.#shared === null) throw new Error(`cannot detach disposed tensor ${this.describe()}`);
    this.#shared.refs++;
    return new Tensor(this.backend, this.#shared, this.shape, this.dtype, false);
  }

  /** Reads the values back to the host (waits for pending GPU work). */
  data(): Promise<HostArray> {
    return this.backend.read(this.storage);
  }

  /** Reads a one-element tensor as a number. */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new Error(`item() needs a tensor of one element, got shape ${formatShape(this.shape)}`);
    }
    return (await this.data())[0];
  }

  /** Releases this view; the storage returns to the pool when no view uses it. */
  dispose(): void {
    const shared = this.#shared;
    if (shared === null) return;
    this.#shared = null;
    this.node = null;
    shared.refs--;
    if (shared.refs === 0) this.backend.release(shared.storage);
  }

  describe(): string {
    return `${this.name || "tensor"}${formatShape(this.shape)}`;
  }

  /**
   * Internal: builds an op's output from a fresh storage and records its gradient rule when any
   * input requires a gradient and recording is on.
   */
  static fromOp(
    storage: Storage,
    shape: readonly number[],
    inputs: Tensor[],
    op: string,
    backward: GradNode["backward"],
    dtype: DType = "f32",
  ): Tensor {
    const backend = inputs[0].backend;
    const out = Tensor.fromStorage(backend, storage, shape, dtype);
    if (gradEnabled && inputs.some((t) => t.requiresGrad)) {
      out.requiresGrad = true;
      out.node = { op, inputs, backward };
    }
    return out;
  }
}

/** Resolves one `-1` entry and checks that the element count is unchanged. */
function resolveReshape(from: readonly number[], to: readonly number[]): number[] {
  const out = [...to];
  const unknown = out.indexOf(-1);
  const known = out.reduce((p, d) => (d === -1 ? p : p * d), 1);
  if (unknown >= 0) out[unknown] = known === 0 ? 0 : sizeOf(from) / known;
  if (sizeOf(out) !== sizeOf(from) || !out.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new Error(`cannot reshape ${formatShape(from)} to ${formatShape(to)}`);
  }
  return out;
}
