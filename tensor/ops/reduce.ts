/** Reductions along one axis: sum, mean and max, with their gradients. */

import type { Backend, Storage } from "../../kernels/backend.ts";
import { Tensor } from "../tensor.ts";
import { normalizeAxis, splitAtAxis } from "../shape.ts";
import { scale } from "./elementwise.ts";

function reducedShape(shape: readonly number[], axis: number, keepDim: boolean): number[] {
  const out = [...shape];
  if (keepDim) out[axis] = 1;
  else out.splice(axis, 1);
  return out;
}

/** Repeats g ([outer, inner]) n times along the middle axis: the gradient of a sum. */
function broadcastAlong(
  backend: Backend,
  g: Storage,
  outer: number,
  n: number,
  inner: number,
): Storage {
  const ones = backend.alloc(outer * n * inner, "f32");
  backend.fill(ones, 1);
  const out = backend.binary("mul", ones, [outer, n, inner], g, [outer, 1, inner], [
    outer,
    n,
    inner,
  ]);
  backend.release(ones);
  return out;
}

/** Sum along `axis` (negative counts from the end). */
export function sum(x: Tensor, axis: number, keepDim = false): Tensor {
  const a = normalizeAxis("sum", axis, x.rank);
  const { outer, n, inner } = splitAtAxis(x.shape, a);
  const storage = x.backend.reduce("sum", x.storage, outer, n, inner);
  return Tensor.fromOp(storage, reducedShape(x.shape, a, keepDim), [x], "sum", (dy) => [
    Tensor.fromStorage(x.backend, broadcastAlong(x.backend, dy.storage, outer, n, inner), x.shape),
  ]);
}

/** Mean along `axis`. */
export function mean(x: Tensor, axis: number, keepDim = false): Tensor {
  const a = normalizeAxis("mean", axis, x.rank);
  return scale(sum(x, a, keepDim), 1 / x.shape[a]);
}

/** Maximum along `axis`; the gradient goes to the first maximal element. */
export function max(x: Tensor, axis: number, keepDim = false): Tensor {
  const a = normalizeAxis("max", axis, x.rank);
  const { outer, n, inner } = splitAtAxis(x.shape, a);
  const storage = x.backend.reduce("max", x.storage, outer, n, inner);
  return Tensor.fromOp(storage, reducedShape(x.shape, a, keepDim), [x], "max", (dy) => [
    Tensor.fromStorage(
      x.backend,
      x.backend.maxBackward(x.storage, dy.storage, outer, n, inner),
      x.shape,
    ),
  ]);
}

/** Sum of every element, as a one-element tensor of shape []. */
export function sumAll(x: Tensor): Tensor {
  return sum(x.reshape([x.size]), 0);
}

/** Mean of every element, as a one-element tensor of shape []. */
export function meanAll(x: Tensor): Tensor {
  return scale(sumAll(x), 1 / x.size);
}
