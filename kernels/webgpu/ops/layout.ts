/** Layout ops: fill, transpose of two axes and block copies along an axis. They move raw bits. */

import type { AxisCopySpec, Storage } from "../../backend.ts";
import { checkCount, checkShape } from "./checks.ts";
import { defineKernel, kernelCache, type KernelContext, ro, rw, threadGrid } from "./kernel.ts";

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

/**
 * Swaps the axes A and B of x viewed as [outer, A, mid, B, inner], writing y as
 * [outer, B, mid, A, inner]. Every two-axis transpose of any rank has this form. When `inner` is a
 * multiple of 4, each thread moves one vec4. Mesa's llvmpipe adapter serves each storage access
 * lane by lane (see matmul.ts). With one element per thread, the tiny GPT's attention-head
 * transposes took about 10% of its training step (2-core machine, December 2026).
 */
const transposeKernel = kernelCache((vectorized: boolean) =>
  defineKernel({
    label: `transpose${vectorized ? " vec4" : ""}`,
    workgroupSize: WG,
    buffers: [ro("x", vectorized ? "vec4<u32>" : "u32"), rw("y", vectorized ? "vec4<u32>" : "u32")],
    params: [["n", "u32"], ["a", "u32"], ["mid", "u32"], ["b", "u32"], ["inner", "u32"]],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  let e = i % params.inner;
  let ia = (i / params.inner) % params.a;
  let im = (i / (params.inner * params.a)) % params.mid;
  let ib = (i / (params.inner * params.a * params.mid)) % params.b;
  let o = i / (params.inner * params.a * params.mid * params.b);
  y[i] = x[(((o * params.a + ia) * params.mid + im) * params.b + ib) * params.inner + e];
}`,
  })
);

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
  const y = ctx.output(size, own.dtype);
  if (size === 0) return y;

  const [lo, hi] = axis1 < axis2 ? [axis1, axis2] : [axis2, axis1];
  const productOf = (dims: readonly number[]) => dims.reduce((p, d) => p * d, 1);
  // Swapping an axis with itself is a copy, so the whole array is the view's inner part.
  const [a, mid, b, inner] = lo === hi
    ? [1, 1, 1, size]
    : [shape[lo], productOf(shape.slice(lo + 1, hi)), shape[hi], productOf(shape.slice(hi + 1))];
  const width = inner % 4 === 0 ? 4 : 1;
  const n = size / width;
  ctx.dispatch(
    transposeKernel(width === 4),
    [own, y],
    [n, a, mid, b, inner / width],
    threadGrid(n, WG),
  );
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
