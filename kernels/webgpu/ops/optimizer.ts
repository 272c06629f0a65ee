/** Fused optimizer ops: sum of squares (for the global gradient norm), clip coefficient, AdamW. */

import type { AdamWSpec, Storage } from "../../backend.ts";
import { defineKernel, kernelCache, type KernelContext, ro, rw, threadGrid } from "./kernel.ts";

const WG = 256;

/** Elements per workgroup in the first pass of sumSquares; fixed, so the summation order is too. */
const SUM_SQUARES_BLOCK = 8192;

/** Added to the norm before dividing, so a zero gradient norm gives a coefficient of 1. */
const CLIP_EPS = 1e-6;

/**
 * Sums `params.block` values per workgroup, each thread striding by WG, then a fixed tree.
 * "squares" sums squares, and "total" sums plain values. "squares4" sums squares of four elements
 * per load, with n and block counted in vec4s, because Mesa's llvmpipe adapter serves each storage
 * access lane by lane (see matmul.ts). Pass 1 writes one partial per block of SUM_SQUARES_BLOCK
 * elements, and pass 2 sums the partials with a single workgroup.
 */
const blockSumKernel = kernelCache((mode: "squares" | "squares4" | "total") =>
  defineKernel({
    label: `sumSquares ${mode}`,
    workgroupSize: WG,
    buffers: [ro("x", mode === "squares4" ? "vec4<f32>" : "f32"), rw("partials")],
    params: [["n", "u32"], ["block", "u32"]],
    body: `
var<workgroup> scratch: array<f32, WG>;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let start = wid.x * params.block;
  let end = min(start + params.block, params.n);
  var acc = 0.0f;
  for (var i = start + lid; i < end; i += WG) {
    let v = x[i];
    acc += ${{ squares: "v * v", squares4: "dot(v, v)", total: "v" }[mode]};
  }
  scratch[lid] = acc;
  workgroupBarrier();
  for (var width = WG / 2u; width > 0u; width = width / 2u) {
    if (lid < width) { scratch[lid] = scratch[lid] + scratch[lid + width]; }
    workgroupBarrier();
  }
  if (lid == 0u) { partials[wid.x] = scratch[0]; }
}`,
  })
);

export function sumSquares(ctx: KernelContext, x: Storage): Storage {
  const xs = ctx.input("sumSquares", "x", x, x.size, "f32");
  const out = ctx.output(1, "f32");

  const width = xs.size % 4 === 0 ? 4 : 1;
  const squares = blockSumKernel(width === 4 ? "squares4" : "squares");
  const squaresParams = [xs.size / width, SUM_SQUARES_BLOCK / width];
  const blocks = Math.max(1, Math.ceil(xs.size / SUM_SQUARES_BLOCK));
  if (blocks === 1) {
    ctx.dispatch(squares, [xs, out], squaresParams, [1, 1, 1]);
    return out;
  }
  if (blocks > 65535) {
    throw new Error(`sumSquares: ${xs.size} elements need ${blocks} blocks, over 65535`);
  }
  const partials = ctx.output(blocks, "f32");
  ctx.dispatch(squares, [xs, partials], squaresParams, [blocks, 1, 1]);
  ctx.dispatch(blockSumKernel("total"), [partials, out], [blocks, blocks], [1, 1, 1]);
  ctx.release(partials);
  return out;
}

const clipKernel = defineKernel({
  label: "clipCoefficient",
  workgroupSize: 1,
  buffers: [ro("normSq"), rw("out")],
  params: [["maxNorm", "f32"], ["eps", "f32"]],
  body: `
@compute @workgroup_size(WG)
fn main() {
  out[0] = min(1.0f, params.maxNorm / (sqrt(normSq[0]) + params.eps));
}`,
});

/** min(1, maxNorm / (sqrt(normSq) + 1e-6)). */
export function clipCoefficient(ctx: KernelContext, normSq: Storage, maxNorm: number): Storage {
  const op = "clipCoefficient";
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new Error(`${op}: maxNorm is ${maxNorm} but must be a finite positive number`);
  }
  const norms = ctx.input(op, "normSq", normSq, 1, "f32");
  const out = ctx.output(1, "f32");
  ctx.dispatch(clipKernel, [norms, out], [maxNorm, CLIP_EPS], [1, 1, 1]);
  return out;
}

/**
 * One AdamW step per element, in the order of PyTorch's AdamW: scale the gradient, decay the
 * parameter, update the moments, then step by lr · m̂ / (sqrt(v̂) + eps). The vec4 form runs the
 * same operations on four elements per thread. It needs a quarter of the storage accesses, which
 * Mesa's llvmpipe adapter serves lane by lane (see matmul.ts).
 */
const adamwKernel = kernelCache((key: `${boolean} ${boolean}`) => {
  const [scaled, vectorized] = key.split(" ").map((flag) => flag === "true");
  const type = vectorized ? "vec4<f32>" : "f32";
  return defineKernel({
    label: `adamw${scaled ? " scaled" : ""}${vectorized ? " vec4" : ""}`,
    workgroupSize: WG,
    buffers: [
      rw("param", type),
      ro("grad", type),
      rw("m", type),
      rw("v", type),
      ...(scaled ? [ro("gradScale")] : []),
    ],
    params: [
      ["n", "u32"],
      ["lr", "f32"],
      ["beta1", "f32"],
      ["beta2", "f32"],
      ["eps", "f32"],
      ["decay", "f32"],
      ["correction1", "f32"],
      ["correction2", "f32"],
    ],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  let g = grad[i]${scaled ? " * gradScale[0]" : ""};
  var p = param[i] - params.decay * param[i];
  let mi = params.beta1 * m[i] + (1.0f - params.beta1) * g;
  let vi = params.beta2 * v[i] + (1.0f - params.beta2) * g * g;
  m[i] = mi;
  v[i] = vi;
  let mHat = mi / params.correction1;
  let vHat = vi / params.correction2;
  p -= params.lr * mHat / (sqrt(vHat) + params.eps);
  param[i] = p;
}`,
  });
});

export function adamw(
  ctx: KernelContext,
  state: { param: Storage; grad: Storage; m: Storage; v: Storage; gradScale: Storage | null },
  spec: AdamWSpec,
): void {
  const op = "adamw";
  const { lr, beta1, beta2, eps, weightDecay, step } = spec;
  for (const [name, value] of Object.entries({ lr, beta1, beta2, eps, weightDecay })) {
    if (!Number.isFinite(value)) {
      throw new Error(`${op}: ${name} is ${value} but must be a finite number`);
    }
  }
  if (!Number.isInteger(step) || step < 1) {
    throw new Error(`${op}: step is ${step} but must be an integer ≥ 1 (it counts from 1)`);
  }
  const param = ctx.input(op, "param", state.param, state.param.size, "f32");
  const n = param.size;
  const storages = [
    param,
    ctx.input(op, "grad", state.grad, n, "f32"),
    ctx.input(op, "m", state.m, n, "f32"),
    ctx.input(op, "v", state.v, n, "f32"),
  ];
  if (state.gradScale) storages.push(ctx.input(op, "gradScale", state.gradScale, 1, "f32"));
  if (n === 0) return;

  // Bias corrections in float64 on the host, as the CPU backend computes them.
  const corrections = [1 - beta1 ** step, 1 - beta2 ** step];
  const width = n % 4 === 0 ? 4 : 1;
  const values = [n / width, lr, beta1, beta2, eps, lr * weightDecay, ...corrections];
  const kernel = adamwKernel(`${state.gradScale !== null} ${width === 4}`);
  ctx.dispatch(kernel, storages, values, threadGrid(n / width, WG));
}

/** Muon's momentum step per element: m ← μ·m + g, direction g + μ·m (Nesterov) or m. */
const muonMomentumKernel = kernelCache((key: `${boolean} ${boolean}`) => {
  const [scaled, nesterov] = key.split(" ").map((flag) => flag === "true");
  return defineKernel({
    label: `muonMomentum${scaled ? " scaled" : ""}${nesterov ? " nesterov" : ""}`,
    workgroupSize: WG,
    buffers: [rw("m"), ro("grad"), rw("direction"), ...(scaled ? [ro("gradScale")] : [])],
    params: [["n", "u32"], ["momentum", "f32"]],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  let g = grad[i]${scaled ? " * gradScale[0]" : ""};
  let mi = params.momentum * m[i] + g;
  m[i] = mi;
  direction[i] = ${nesterov ? "g + params.momentum * mi" : "mi"};
}`,
  });
});

export function muonMomentum(
  ctx: KernelContext,
  state: { m: Storage; grad: Storage; gradScale: Storage | null },
  momentum: number,
  nesterov: boolean,
): Storage {
  const op = "muonMomentum";
  if (!Number.isFinite(momentum)) {
    throw new Error(`${op}: momentum is ${momentum} but must be a finite number`);
  }
  const m = ctx.input(op, "m", state.m, state.m.size, "f32");
  const n = m.size;
  const storages = [m, ctx.input(op, "grad", state.grad, n, "f32")];
  const direction = ctx.output(n, "f32");
  storages.push(direction);
  if (state.gradScale) storages.push(ctx.input(op, "gradScale", state.gradScale, 1, "f32"));
  if (n > 0) {
    ctx.dispatch(
      muonMomentumKernel(`${state.gradScale !== null} ${nesterov}`),
      storages,
      [n, momentum],
      threadGrid(n, WG),
    );
  }
  return direction;
}
