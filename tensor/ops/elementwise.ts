/** Elementwise ops with broadcasting, each with its gradient rule beside the forward call. */

import type { BinaryOp, UnaryOp } from "../../kernels/backend.ts";
import { Tensor } from "../tensor.ts";
import { broadcastShapes, formatShape, padShape, ShapeError } from "../shape.ts";

function checkSameBackend(op: string, a: Tensor, b: Tensor): void {
  if (a.backend !== b.backend) {
    throw new Error(`${op}: ${a.describe()} and ${b.describe()} live on different backends`);
  }
  if (a.dtype !== "f32" || b.dtype !== "f32") {
    throw new ShapeError(`${op}: needs f32 tensors, got ${a.dtype} and ${b.dtype}`);
  }
}

/** Sums a broadcast gradient back to the shape of the input it came from. */
export function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const padded = padShape(shape, g.rank);
  const reduced = g.backend.sumToShape(g.storage, g.shape, padded);
  return Tensor.fromStorage(g.backend, reduced, padded).reshape(shape);
}

function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  checkSameBackend(op, a, b);
  const shape = broadcastShapes(op, a.shape, b.shape);
  const rank = shape.length;
  const storage = a.backend.binary(
    op,
    a.storage,
    padShape(a.shape, rank),
    b.storage,
    padShape(b.shape, rank),
    shape,
  );
  return Tensor.fromOp(storage, shape, [a, b], op, (dy) => {
    const da = a.requiresGrad ? binaryGradA(op, a, b, dy) : null;
    const db = b.requiresGrad ? binaryGradB(op, a, b, dy) : null;
    return [
      da === null ? null : unbroadcast(da, a.shape),
      db === null ? null : unbroadcast(db, b.shape),
    ];
  });
}

function binaryGradA(op: BinaryOp, _a: Tensor, b: Tensor, dy: Tensor): Tensor {
  switch (op) {
    case "add":
    case "sub":
      return dy;
    case "mul":
      return mul(dy, b);
    case "div":
      return div(dy, b);
  }
}

function binaryGradB(op: BinaryOp, a: Tensor, b: Tensor, dy: Tensor): Tensor {
  switch (op) {
    case "add":
      return dy;
    case "sub":
      return neg(dy);
    case "mul":
      return mul(dy, a);
    case "div":
      // d(a/b)/db = −a / b²
      return neg(div(mul(dy, a), square(b)));
  }
}

export function add(a: Tensor, b: Tensor): Tensor {
  return binary("add", a, b);
}

export function sub(a: Tensor, b: Tensor): Tensor {
  return binary("sub", a, b);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  return binary("mul", a, b);
}

export function div(a: Tensor, b: Tensor): Tensor {
  return binary("div", a, b);
}

function unary(op: UnaryOp, x: Tensor, param?: number): Tensor {
  if (x.dtype !== "f32") throw new ShapeError(`${op}: needs an f32 tensor, got ${x.describe()}`);
  const storage = x.backend.unary(op, x.storage, param);
  return Tensor.fromOp(storage, x.shape, [x], op, (dy) => {
    const dx = x.backend.unaryBackward(op, x.storage, dy.storage, param);
    return [Tensor.fromStorage(x.backend, dx, x.shape)];
  });
}

export const neg = (x: Tensor): Tensor => unary("neg", x);
export const exp = (x: Tensor): Tensor => unary("exp", x);
export const log = (x: Tensor): Tensor => unary("log", x);
export const sqrt = (x: Tensor): Tensor => unary("sqrt", x);
export const rsqrt = (x: Tensor): Tensor => unary("rsqrt", x);
export const tanh = (x: Tensor): Tensor => unary("tanh", x);
export const relu = (x: Tensor): Tensor => unary("relu", x);
/** GELU with the tanh approximation (as in GPT-2). */
export const gelu = (x: Tensor): Tensor => unary("gelu", x);
export const silu = (x: Tensor): Tensor => unary("silu", x);
export const sigmoid = (x: Tensor): Tensor => unary("sigmoid", x);
export const square = (x: Tensor): Tensor => unary("square", x);

/** x raised to a constant power. */
export function pow(x: Tensor, exponent: number): Tensor {
  return unary("pow", x, exponent);
}

/** x times a constant. */
export function scale(x: Tensor, factor: number): Tensor {
  return unary("scale", x, factor);
}

/** x plus a constant. */
export function addScalar(x: Tensor, value: number): Tensor {
  return unary("addScalar", x, value);
}

/** Checks two shapes are identical, naming the op and both shapes otherwise. */
export function assertSameShape(op: string, a: Tensor, b: Tensor): void {
  if (a.rank !== b.rank || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new ShapeError(
      `${op}: expected equal shapes, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`,
    );
  }
}
