/** Binary elementwise ops with NumPy broadcasting, and `sumToShape`, which undoes broadcasting. */

import type { BinaryOp, Storage } from "../backend.ts";
import { checkCount, type CpuMemory, formatShape, product } from "./storage.ts";

/** Max rank of `binary` and `transpose` shapes in the Backend interface; sumToShape shares it. */
export const MAX_RANK = 6;

function binaryFn(op: BinaryOp): (a: number, b: number) => number {
  switch (op) {
    case "add":
      return (a, b) => a + b;
    case "sub":
      return (a, b) => a - b;
    case "mul":
      return (a, b) => a * b;
    case "div":
      return (a, b) => a / b;
  }
  throw new Error(`binary: op ${String(op)} is not supported; use add, sub, mul or div`);
}

export function checkShape(op: string, name: string, shape: readonly number[]): void {
  if (shape.length > MAX_RANK) {
    const shown = formatShape(shape);
    throw new Error(`${op}: ${name} ${shown} has rank ${shape.length} but the max is ${MAX_RANK}`);
  }
  shape.forEach((d, axis) => checkCount(op, `${name}[${axis}]`, d));
}

/**
 * Strides into an array of shape `shape` when indexed by positions of `outShape`: broadcast
 * axes get stride 0. Throws unless `shape` has the rank of `outShape` and broadcasts to it.
 */
function broadcastStrides(
  op: string,
  name: string,
  shape: readonly number[],
  outShape: readonly number[],
): number[] {
  checkShape(op, name, shape);
  if (shape.length !== outShape.length) {
    throw new Error(
      `${op}: ${name} ${formatShape(shape)} has rank ${shape.length} but outShape ` +
        `${formatShape(outShape)} has rank ${outShape.length}; pad ${name} with leading 1s`,
    );
  }

  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let axis = shape.length - 1; axis >= 0; axis--) {
    if (shape[axis] !== outShape[axis] && shape[axis] !== 1) {
      throw new Error(
        `${op}: ${name} ${formatShape(shape)} does not broadcast to ${formatShape(outShape)} ` +
          `(axis ${axis})`,
      );
    }
    strides[axis] = shape[axis] === 1 ? 0 : stride;
    stride *= shape[axis];
  }
  return strides;
}

export function binary(
  mem: CpuMemory,
  op: BinaryOp,
  a: Storage,
  aShape: readonly number[],
  b: Storage,
  bShape: readonly number[],
  outShape: readonly number[],
): Storage {
  const name = `binary ${op}`;
  const f = binaryFn(op);
  checkShape(name, "outShape", outShape);
  const aStrides = broadcastStrides(name, "aShape", aShape, outShape);
  const bStrides = broadcastStrides(name, "bShape", bShape, outShape);
  const ad = mem.floats(name, "a", a, product(aShape));
  const bd = mem.floats(name, "b", b, product(bShape));

  const out = mem.allocFloat(product(outShape));
  const yd = out.data;
  const rank = outShape.length;
  const index = new Array<number>(rank).fill(0);
  let ai = 0;
  let bi = 0;
  for (let o = 0; o < yd.length; o++) {
    yd[o] = f(ad[ai], bd[bi]);

    // Advance the row-major position in outShape and both input offsets with it.
    for (let axis = rank - 1; axis >= 0; axis--) {
      index[axis]++;
      ai += aStrides[axis];
      bi += bStrides[axis];
      if (index[axis] < outShape[axis]) break;
      ai -= aStrides[axis] * outShape[axis];
      bi -= bStrides[axis] * outShape[axis];
      index[axis] = 0;
    }
  }
  return out;
}

/** Sums over the axes where `outShape` is 1; each output sums its inputs in row-major order. */
export function sumToShape(
  mem: CpuMemory,
  x: Storage,
  shape: readonly number[],
  outShape: readonly number[],
): Storage {
  const op = "sumToShape";
  checkShape(op, "shape", shape);
  const outStrides = broadcastStrides(op, "outShape", outShape, shape);
  const xd = mem.floats(op, "x", x, product(shape));

  const sums = new Float64Array(product(outShape));
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  let oi = 0;
  for (let i = 0; i < xd.length; i++) {
    sums[oi] += xd[i];

    for (let axis = rank - 1; axis >= 0; axis--) {
      index[axis]++;
      oi += outStrides[axis];
      if (index[axis] < shape[axis]) break;
      oi -= outStrides[axis] * shape[axis];
      index[axis] = 0;
    }
  }

  const out = mem.allocFloat(sums.length);
  out.data.set(sums);
  return out;
}
