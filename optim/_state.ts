/** Helpers shared by the optimizer algorithms: in-place writes and persistent state tensors. */

import { Tensor } from "../tensor/mod.ts";

/**
 * Copies `value` into `target`'s storage, so every reference to `target` (a module, the optimizer's
 * state map) reads the new values. Backend ops otherwise return new storages.
 */
export function assignInPlace(target: Tensor, value: Tensor): void {
  if (target.size !== value.size) {
    throw new Error(`assignInPlace: ${target.describe()} cannot take ${value.describe()}`);
  }
  const n = target.size;
  target.backend.copyAxis(value.storage, target.storage, {
    outer: 1,
    inner: 1,
    srcAxisLen: n,
    dstAxisLen: n,
    srcStart: 0,
    dstStart: 0,
    len: n,
  });
}

/** Creates a zero tensor shaped like `like` that outlives step scopes. */
export function persistentZeros(like: Tensor, name: string): Tensor {
  const t = Tensor.zeros(like.backend, like.shape);
  t.persistent = true;
  t.name = name;
  return t;
}
