/**
 * Reductions: sum and max along the middle axis of [outer, n, inner], the gradient of max, and
 * `sumToShape` (the adjoint of broadcasting). Every output element sums its inputs sequentially in
 * index order, or, for long rows, in a fixed strided-then-tree order, so results are reproducible.
 */

import type { ReduceOp, Storage } from "../../backend.ts";
import { checkCount, checkShape, padShape, rankParams, stridesOf, unravelWgsl } from "./checks.ts";
import {
  defineKernel,
  groupGrid,
  kernelCache,
  type KernelContext,
  ro,
  rw,
  threadGrid,
} from "./kernel.ts";

const WG = 256;

/** Rows at least this long (with inner = 1) are reduced by a whole workgroup each. */
const GROUP_REDUCE_MIN_N = 1024;

/**
 * NaN test on the bit pattern: WGSL lets compilers assume floats are finite, so `x != x` and
 * `isnan`-style comparisons may be optimised away.
 */
export const IS_NAN_WGSL = `
fn isNanBits(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}
// True when v should replace best as the running maximum; NaN wins and then sticks, as in PyTorch.
fn beatsMax(v: f32, best: f32) -> bool {
  return !isNanBits(best) && (v > best || isNanBits(v));
}`;

const reduceThreadKernel = kernelCache((op: ReduceOp) =>
  defineKernel({
    label: `reduce ${op}`,
    workgroupSize: WG,
    buffers: [ro("x"), rw("y")],
    params: [["outputs", "u32"], ["n", "u32"], ["inner", "u32"]],
    body: `${IS_NAN_WGSL}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatThread(gid, nwg);
  if (t >= params.outputs) { return; }
  let o = t / params.inner;
  let i = t % params.inner;
  let start = o * params.n * params.inner + i;
  ${
      op === "sum"
        ? `var acc = 0.0f;
  for (var j = 0u; j < params.n; j++) { acc += x[start + j * params.inner]; }`
        : `var acc = x[start];
  for (var j = 1u; j < params.n; j++) {
    let v = x[start + j * params.inner];
    if (beatsMax(v, acc)) { acc = v; }
  }`
    }
  y[t] = acc;
}`,
  })
);

/** One workgroup per contiguous row: strided partial results, then a fixed tree. */
const reduceGroupKernel = kernelCache((op: ReduceOp) =>
  defineKernel({
    label: `reduce ${op} rows`,
    workgroupSize: WG,
    buffers: [ro("x"), rw("y")],
    params: [["rows", "u32"], ["n", "u32"]],
    body: `${IS_NAN_WGSL}
var<workgroup> partial: array<f32, WG>;
fn combine(a: f32, b: f32) -> f32 {
  ${op === "sum" ? "return a + b;" : "return select(a, b, beatsMax(b, a));"}
}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = flatGroup(wid, nwg);
  let start = min(row, params.rows - 1u) * params.n;
  var acc = ${op === "sum" ? "0.0f" : "x[start + min(lid, params.n - 1u)]"};
  for (var j = lid; j < params.n; j += WG) { acc = combine(acc, x[start + j]); }
  partial[lid] = acc;
  workgroupBarrier();
  for (var width = WG / 2u; width > 0u; width = width / 2u) {
    if (lid < width) { partial[lid] = combine(partial[lid], partial[lid + width]); }
    workgroupBarrier();
  }
  if (lid == 0u && row < params.rows) { y[row] = partial[0]; }
}`,
  })
);

function checkReduceSizes(op: string, outer: number, n: number, inner: number): void {
  checkCount(op, "outer", outer);
  checkCount(op, "n", n);
  checkCount(op, "inner", inner);
}

export function reduce(
  ctx: KernelContext,
  op: ReduceOp,
  x: Storage,
  outer: number,
  n: number,
  inner: number,
): Storage {
  const name = `reduce ${op}`;
  checkReduceSizes(name, outer, n, inner);
  if (op !== "sum" && op !== "max") {
    throw new Error(`reduce: op ${String(op)} is not supported; use sum or max`);
  }
  if (op === "max" && n === 0) {
    throw new Error(`${name}: n is 0, and the max of an empty axis is undefined`);
  }
  const xs = ctx.input(name, "x", x, outer * n * inner, "f32");

  const outputs = outer * inner;
  const y = ctx.output(outputs, "f32");
  if (outputs === 0) return y;

  if (inner === 1 && n >= GROUP_REDUCE_MIN_N) {
    ctx.dispatch(reduceGroupKernel(op), [xs, y], [outer, n], groupGrid(outer));
  } else {
    ctx.dispatch(reduceThreadKernel(op), [xs, y], [outputs, n, inner], threadGrid(outputs, WG));
  }
  return y;
}

const maxBackwardKernel = defineKernel({
  label: "maxBackward",
  workgroupSize: WG,
  buffers: [ro("x"), ro("dy"), rw("dx")],
  params: [["outputs", "u32"], ["n", "u32"], ["inner", "u32"]],
  body: `${IS_NAN_WGSL}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatThread(gid, nwg);
  if (t >= params.outputs) { return; }
  let o = t / params.inner;
  let i = t % params.inner;
  let start = o * params.n * params.inner + i;
  var best = 0u;
  var bestValue = x[start];
  for (var j = 1u; j < params.n; j++) {
    let v = x[start + j * params.inner];
    if (beatsMax(v, bestValue)) {
      best = j;
      bestValue = v;
    }
  }
  let g = dy[t];
  for (var j = 0u; j < params.n; j++) {
    dx[start + j * params.inner] = select(0.0f, g, j == best);
  }
}`,
});

export function maxBackward(
  ctx: KernelContext,
  x: Storage,
  dy: Storage,
  outer: number,
  n: number,
  inner: number,
): Storage {
  const op = "maxBackward";
  checkReduceSizes(op, outer, n, inner);
  const xs = ctx.input(op, "x", x, outer * n * inner, "f32");
  const dys = ctx.input(op, "dy", dy, outer * inner, "f32");

  const dx = ctx.output(xs.size, "f32");
  const outputs = outer * inner;
  if (xs.size > 0) {
    ctx.dispatch(maxBackwardKernel, [xs, dys, dx], [outputs, n, inner], threadGrid(outputs, WG));
  }
  return dx;
}

const sumToShapeKernel = defineKernel({
  label: "sumToShape",
  workgroupSize: WG,
  buffers: [ro("x"), rw("y")],
  params: [
    ["outputs", "u32"],
    ["reduced", "u32"],
    ...rankParams("out"),
    ...rankParams("keep"),
    ...rankParams("red"),
    ...rankParams("redStride"),
  ],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatThread(gid, nwg);
  if (t >= params.outputs) { return; }
  ${unravelWgsl("t", "out", ["keep"])}
  var acc = 0.0f;
  for (var r = 0u; r < params.reduced; r++) {
    ${unravelWgsl("r", "red", ["redStride"], "redRem")}
    acc += x[keepOffset + redStrideOffset];
  }
  y[t] = acc;
}`,
});

export function sumToShape(
  ctx: KernelContext,
  x: Storage,
  shape: readonly number[],
  outShape: readonly number[],
): Storage {
  const op = "sumToShape";
  const size = checkShape(op, "shape", shape);
  const outputs = checkShape(op, "outShape", outShape);
  if (shape.length !== outShape.length) {
    throw new Error(`${op}: shape [${shape}] and outShape [${outShape}] must have the same rank`);
  }
  const xs = ctx.input(op, "x", x, size, "f32");

  const strides = stridesOf(shape);
  const keepStrides: number[] = [];
  const reducedShape: number[] = [];
  const reducedStrides: number[] = [];
  let reduced = 1;
  shape.forEach((dim, d) => {
    const outDim = outShape[d];
    if (outDim !== dim && outDim !== 1) {
      throw new Error(
        `${op}: outShape [${outShape.join(", ")}] is not shape [${shape.join(", ")}] with some ` +
          `axes reduced to 1`,
      );
    }
    const isReduced = outDim === 1 && dim !== 1;
    keepStrides.push(isReduced ? 0 : strides[d]);
    reducedShape.push(isReduced ? dim : 1);
    reducedStrides.push(isReduced ? strides[d] : 0);
    if (isReduced) reduced *= dim;
  });
  const pad = (
    values: number[],
    fill: number,
  ) => [...Array(6 - values.length).fill(fill), ...values];

  const y = ctx.output(outputs, "f32");
  if (outputs > 0) {
    ctx.dispatch(
      sumToShapeKernel,
      [xs, y],
      [
        outputs,
        reduced,
        ...padShape(outShape),
        ...pad(keepStrides, 0),
        ...pad(reducedShape, 1),
        ...pad(reducedStrides, 0),
      ],
      threadGrid(outputs, WG),
    );
  }
  return y;
}
