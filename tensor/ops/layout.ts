/** Layout ops: swapping two axes, slicing and concatenating along an axis. */

import { Tensor } from "../tensor.ts";
import { formatShape, normalizeAxis, ShapeError, sizeOf, splitAtAxis } from "../shape.ts";

/** Swaps two axes, producing a contiguous copy. */
export function transpose(x: Tensor, axis1: number, axis2: number): Tensor {
  const a1 = normalizeAxis("transpose", axis1, x.rank);
  const a2 = normalizeAxis("transpose", axis2, x.rank);
  const shape = [...x.shape];
  [shape[a1], shape[a2]] = [shape[a2], shape[a1]];
  const storage = x.backend.transpose(x.storage, x.shape, a1, a2);
  return Tensor.fromOp(storage, shape, [x], "transpose", (dy) => [transpose(dy, a1, a2)]);
}

/** Elements start ≤ i < end along `axis`. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const a = normalizeAxis("slice", axis, x.rank);
  const { outer, n, inner } = splitAtAxis(x.shape, a);
  if (
    !(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= n)
  ) {
    throw new ShapeError(
      `slice: range [${start}, ${end}) is invalid for axis ${a} of ${formatShape(x.shape)}`,
    );
  }
  const len = end - start;
  const shape = [...x.shape];
  shape[a] = len;

  const backend = x.backend;
  const out = backend.alloc(sizeOf(shape), x.dtype);
  backend.copyAxis(x.storage, out, {
    outer,
    inner,
    srcAxisLen: n,
    dstAxisLen: len,
    srcStart: start,
    dstStart: 0,
    len,
  });

  return Tensor.fromOp(out, shape, [x], "slice", (dy) => {
    const dx = backend.alloc(x.size, "f32");
    backend.fill(dx, 0);
    backend.copyAxis(dy.storage, dx, {
      outer,
      inner,
      srcAxisLen: len,
      dstAxisLen: n,
      srcStart: 0,
      dstStart: start,
      len,
    });
    return [Tensor.fromStorage(backend, dx, x.shape)];
  }, x.dtype);
}

/** Joins tensors along `axis`; every other axis must match. */
export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new ShapeError("concat: needs at least one tensor");
  const first = xs[0];
  const a = normalizeAxis("concat", axis, first.rank);
  for (const x of xs) {
    const matches = x.rank === first.rank &&
      x.shape.every((d, i) => i === a || d === first.shape[i]);
    if (!matches) {
      throw new ShapeError(
        `concat: ${formatShape(x.shape)} does not match ${formatShape(first.shape)} ` +
          `outside axis ${a}`,
      );
    }
  }

  const total = xs.reduce((s, x) => s + x.shape[a], 0);
  const shape = [...first.shape];
  shape[a] = total;
  const { outer, inner } = splitAtAxis(first.shape, a);
  const backend = first.backend;
  const out = backend.alloc(sizeOf(shape), first.dtype);
  const offsets: number[] = [];
  let offset = 0;
  for (const x of xs) {
    offsets.push(offset);
    backend.copyAxis(x.storage, out, {
      outer,
      inner,
      srcAxisLen: x.shape[a],
      dstAxisLen: total,
      srcStart: 0,
      dstStart: offset,
      len: x.shape[a],
    });
    offset += x.shape[a];
  }

  return Tensor.fromOp(
    out,
    shape,
    xs,
    "concat",
    (dy) =>
      xs.map((x, i) => (x.requiresGrad ? slice(dy, a, offsets[i], offsets[i] + x.shape[a]) : null)),
    first.dtype,
  );
}
