/** Layout ops: transpose of two axes, block copy along an axis, and fill. */

import type { AxisCopySpec, Storage } from "../backend.ts";
import { checkShape } from "./broadcast.ts";
import { checkCount, type CpuMemory, product } from "./storage.ts";

function checkAxis(op: string, name: string, axis: number, rank: number): void {
  if (!Number.isInteger(axis) || axis < 0 || axis >= rank) {
    throw new Error(`${op}: ${name} is ${axis} but must be an axis in [0, ${rank})`);
  }
}

export function transpose(
  mem: CpuMemory,
  x: Storage,
  shape: readonly number[],
  axis1: number,
  axis2: number,
): Storage {
  const op = "transpose";
  checkShape(op, "shape", shape);
  checkAxis(op, "axis1", axis1, shape.length);
  checkAxis(op, "axis2", axis2, shape.length);
  const xd = mem.anyDtype(op, "x", x, product(shape));

  const outShape = [...shape];
  outShape[axis1] = shape[axis2];
  outShape[axis2] = shape[axis1];

  // Walk x in row-major order. outStrides[axis] is the output step for one step of x along axis.
  const rank = shape.length;
  const rowMajor = new Array<number>(rank);
  let stride = 1;
  for (let axis = rank - 1; axis >= 0; axis--) {
    rowMajor[axis] = stride;
    stride *= outShape[axis];
  }
  const outStrides = [...rowMajor];
  outStrides[axis1] = rowMajor[axis2];
  outStrides[axis2] = rowMajor[axis1];

  const out = x.dtype === "i32" ? mem.allocInt(xd.length) : mem.allocFloat(xd.length);
  const yd = out.data;
  const index = new Array<number>(rank).fill(0);
  let oi = 0;
  for (let i = 0; i < xd.length; i++) {
    yd[oi] = xd[i];

    for (let axis = rank - 1; axis >= 0; axis--) {
      index[axis]++;
      oi += outStrides[axis];
      if (index[axis] < shape[axis]) break;
      oi -= outStrides[axis] * shape[axis];
      index[axis] = 0;
    }
  }
  return out;
}

export function copyAxis(mem: CpuMemory, src: Storage, dst: Storage, spec: AxisCopySpec): void {
  const op = "copyAxis";
  const { outer, inner, srcAxisLen, dstAxisLen, srcStart, dstStart, len } = spec;
  for (const [name, value] of Object.entries(spec)) checkCount(op, name, value);
  if (srcStart + len > srcAxisLen) {
    throw new Error(
      `${op}: source block [${srcStart}, ${srcStart + len}) exceeds srcAxisLen ${srcAxisLen}`,
    );
  }
  if (dstStart + len > dstAxisLen) {
    throw new Error(
      `${op}: destination block [${dstStart}, ${dstStart + len}) exceeds dstAxisLen ${dstAxisLen}`,
    );
  }
  const sd = mem.anyDtype(op, "src", src, outer * srcAxisLen * inner);
  const dd = mem.anyDtype(op, "dst", dst, outer * dstAxisLen * inner);
  if (src.dtype !== dst.dtype) {
    throw new Error(`${op}: src has dtype ${src.dtype} but dst has dtype ${dst.dtype}`);
  }

  // For each outer index the block is len·inner contiguous elements on both sides.
  const blockLen = len * inner;
  for (let o = 0; o < outer; o++) {
    const from = (o * srcAxisLen + srcStart) * inner;
    const to = (o * dstAxisLen + dstStart) * inner;
    dd.set(sd.subarray(from, from + blockLen), to);
  }
}

export function fill(mem: CpuMemory, dst: Storage, value: number): void {
  const dd = mem.whole("fill", "dst", dst);
  if (dst.dtype === "i32" && !Number.isInteger(value)) {
    throw new Error(`fill: value ${value} is not an integer, so it cannot fill an i32 storage`);
  }
  dd.fill(value);
}
