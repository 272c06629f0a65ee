/** Layout ops: fill, transpose of two axes and block copies along an axis. They move raw bits. */

import type { AxisCopySpec, Storage } from "../../backend.ts";
import { checkCount, checkShape, padShape, rankParams, stridesOf, unravelWgsl } from "./checks.ts";
import { defineKernel, type KernelContext, ro, rw, threadGrid } from "./kernel.ts";

const WG = 256;

const fillKernel = defineKernel({
  label: "fill",
  workgroupSize: WG,
  buffers: [rw("dst", "u32")],
  params: [["n", "u32"], ["bits", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  dst[i] = params.bits;
}`,
});

/** Sets every element of `dst` to the 32-bit pattern `bits`. */
export function fillBits(ctx: KernelContext, dst: Storage, bits: number): void {
  if (dst.size === 0) return;
  ctx.dispatch(fillKernel, [dst], [dst.size, bits >>> 0], threadGrid(dst.size, WG));
}

export function fill(ctx: KernelContext, dst: Storage, value: number): void {
  const own = ctx.input("fill", "dst", dst, dst.size, "any");
  if (own.dtype === "i32") {
    if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) {
      throw new Error(`fill: value ${value} is not an int32, but dst has dtype i32`);
    }
    fillBits(ctx, own, value >>> 0);
    return;
  }
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0];
  fillBits(ctx, own, bits);
}

const transposeKernel = defineKernel({
  label: "transpose",
  workgroupSize: WG,
  buffers: [ro("x", "u32"), rw("y", "u32")],
  params: [["n", "u32"], ...rankParams("shape"), ...rankParams("src")],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  ${unravelWgsl("i", "shape", ["src"])}
  y[i] = x[srcOffset];
}`,
});

export function transpose(
  ctx: KernelContext,
  x: Storage,
  shape: readonly number[],
  axis1: number,
  axis2: number,
): Storage {
  const size = checkShape("transpose", "shape", shape);
  for (const axis of [axis1, axis2]) {
    if (!Number.isInteger(axis) || axis < 0 || axis >= shape.length) {
      throw new Error(`transpose: axis ${axis} is out of range for shape [${shape.join(", ")}]`);
    }
  }
  const own = ctx.input("transpose", "x", x, size, "any");

  const inStrides = stridesOf(shape);
  const outShape = [...shape];
  const srcStrides = [...inStrides];
  [outShape[axis1], outShape[axis2]] = [outShape[axis2], outShape[axis1]];
  [srcStrides[axis1], srcStrides[axis2]] = [srcStrides[axis2], srcStrides[axis1]];
  const padding = 6 - shape.length;
  const paddedStrides = [...Array(padding).fill(0), ...srcStrides];

  const y = ctx.output(size, own.dtype);
  if (size > 0) {
    ctx.dispatch(
      transposeKernel,
      [own, y],
      [size, ...padShape(outShape), ...paddedStrides],
      threadGrid(size, WG),
    );
  }
  return y;
}

const copyAxisKernel = defineKernel({
  label: "copyAxis",
  workgroupSize: WG,
  buffers: [ro("src", "u32"), rw("dst", "u32")],
  params: [
    ["n", "u32"],
    ["inner", "u32"],
    ["len", "u32"],
    ["srcAxisLen", "u32"],
    ["dstAxisLen", "u32"],
    ["srcStart", "u32"],
    ["dstStart", "u32"],
  ],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  let e = i % params.inner;
  let t = i / params.inner;
  let j = t % params.len;
  let o = t / params.len;
  let srcIndex = (o * params.srcAxisLen + params.srcStart + j) * params.inner + e;
  let dstIndex = (o * params.dstAxisLen + params.dstStart + j) * params.inner + e;
  dst[dstIndex] = src[srcIndex];
}`,
});

export function copyAxis(ctx: KernelContext, src: Storage, dst: Storage, spec: AxisCopySpec): void {
  const op = "copyAxis";
  for (const [name, value] of Object.entries(spec)) checkCount(op, name, value as number);
  if (spec.srcStart + spec.len > spec.srcAxisLen || spec.dstStart + spec.len > spec.dstAxisLen) {
    throw new Error(
      `${op}: block of len ${spec.len} at srcStart ${spec.srcStart} / dstStart ${spec.dstStart} ` +
        `does not fit srcAxisLen ${spec.srcAxisLen} / dstAxisLen ${spec.dstAxisLen}`,
    );
  }
  const source = ctx.input(op, "src", src, spec.outer * spec.srcAxisLen * spec.inner, "any");
  const target = ctx.input(op, "dst", dst, spec.outer * spec.dstAxisLen * spec.inner, source.dtype);

  const n = spec.outer * spec.len * spec.inner;
  if (n === 0) return;
  ctx.dispatch(
    copyAxisKernel,
    [source, target],
    [n, spec.inner, spec.len, spec.srcAxisLen, spec.dstAxisLen, spec.srcStart, spec.dstStart],
    threadGrid(n, WG),
  );
}
