/** Elementwise ops: unary functions and their derivatives, and broadcast binary arithmetic. */

import type { BinaryOp, Storage, UnaryOp } from "../../backend.ts";
import { checkFinite, checkShape, padShape, rankParams, stridesOf, unravelWgsl } from "./checks.ts";
import { defineKernel, kernelCache, type KernelContext, ro, rw, threadGrid } from "./kernel.ts";

const WG = 256;

const PARAM_OPS: ReadonlySet<UnaryOp> = new Set(["pow", "scale", "addScalar"]);

/**
 * Helpers of the unary kernels. `tanh` is clamped because tanh(15) is 1 in float32 and some
 * implementations compute the builtin as a ratio of exponentials that overflows to NaN.
 */
const UNARY_HELPERS = `
const GELU_C: f32 = 0.7978845608028654f; // sqrt(2 / pi), the GPT-2 tanh approximation
const GELU_CUBIC: f32 = 0.044715f;
fn tanhSafe(x: f32) -> f32 {
  return tanh(clamp(x, -15.0f, 15.0f));
}
fn sigmoid(x: f32) -> f32 {
  return 1.0f / (1.0f + exp(-x));
}
fn nanF32() -> f32 {
  return bitcast<f32>(0x7fc00000u);
}
// x ** p with JavaScript semantics for negative x: real for integer p, NaN otherwise.
fn powReal(x: f32, p: f32) -> f32 {
  if (p == 0.0f) { return 1.0f; }
  let r = pow(abs(x), p);
  if (x >= 0.0f) { return r; }
  if (fract(p) != 0.0f) { return nanF32(); }
  if (fract(p * 0.5f) != 0.0f) { return -r; }
  return r;
}
fn geluDerivative(x: f32) -> f32 {
  let t = tanhSafe(GELU_C * (x + GELU_CUBIC * x * x * x));
  let du = GELU_C * (1.0f + 3.0f * GELU_CUBIC * x * x);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}
`;

/** WGSL expression of unary(op) in terms of `x` and the param `p`. */
const FORWARD: Record<UnaryOp, string> = {
  neg: "-x",
  exp: "exp(x)",
  log: "log(x)",
  sqrt: "sqrt(x)",
  // 1/sqrt rather than inverseSqrt, which may be a low-precision approximation.
  rsqrt: "1.0f / sqrt(x)",
  tanh: "tanhSafe(x)",
  relu: "select(0.0f, x, x > 0.0f)",
  gelu: "0.5f * x * (1.0f + tanhSafe(GELU_C * (x + GELU_CUBIC * x * x * x)))",
  silu: "x * sigmoid(x)",
  sigmoid: "sigmoid(x)",
  square: "x * x",
  pow: "powReal(x, p)",
  scale: "x * p",
  addScalar: "x + p",
};

/** WGSL expression of d unary(op) / dx in terms of `x` and `p`; relu'(0) is 0, as in PyTorch. */
const DERIVATIVE: Record<UnaryOp, string> = {
  neg: "-1.0f",
  exp: "exp(x)",
  log: "1.0f / x",
  sqrt: "0.5f / sqrt(x)",
  rsqrt: "-0.5f / (x * sqrt(x))",
  tanh: "(1.0f - tanhSafe(x) * tanhSafe(x))",
  relu: "select(0.0f, 1.0f, x > 0.0f)",
  gelu: "geluDerivative(x)",
  silu: "(sigmoid(x) * (1.0f + x * (1.0f - sigmoid(x))))",
  sigmoid: "(sigmoid(x) * (1.0f - sigmoid(x)))",
  square: "2.0f * x",
  pow: "p * powReal(x, p - 1.0f)",
  scale: "p",
  addScalar: "1.0f",
};

const unaryKernel = kernelCache((op: UnaryOp) =>
  defineKernel({
    label: `unary ${op}`,
    workgroupSize: WG,
    buffers: [ro("xs"), rw("ys")],
    params: [["n", "u32"], ["p", "f32"]],
    body: `${UNARY_HELPERS}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  let x = xs[i];
  let p = params.p;
  ys[i] = ${FORWARD[op]};
}`,
  })
);

const unaryBackwardKernel = kernelCache((op: UnaryOp) =>
  defineKernel({
    label: `unaryBackward ${op}`,
    workgroupSize: WG,
    buffers: [ro("xs"), ro("dys"), rw("dxs")],
    params: [["n", "u32"], ["p", "f32"]],
    body: `${UNARY_HELPERS}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  let x = xs[i];
  let p = params.p;
  dxs[i] = dys[i] * (${DERIVATIVE[op]});
}`,
  })
);

function unaryParam(opName: string, op: UnaryOp, param: number | undefined): number {
  if (!(op in FORWARD)) {
    throw new Error(
      `${opName}: op ${String(op)} is not supported; use one of ${Object.keys(FORWARD).join(", ")}`,
    );
  }
  if (!PARAM_OPS.has(op)) return 0;
  if (param === undefined) throw new Error(`${opName} ${op}: param is missing`);
  checkFinite(`${opName} ${op}`, "param", param);
  return param;
}

export function unary(ctx: KernelContext, op: UnaryOp, x: Storage, param?: number): Storage {
  const p = unaryParam("unary", op, param);
  const xs = ctx.input(`unary ${op}`, "x", x, x.size, "f32");

  const y = ctx.output(xs.size, "f32");
  if (xs.size > 0) ctx.dispatch(unaryKernel(op), [xs, y], [xs.size, p], threadGrid(xs.size, WG));
  return y;
}

export function unaryBackward(
  ctx: KernelContext,
  op: UnaryOp,
  x: Storage,
  dy: Storage,
  param?: number,
): Storage {
  const p = unaryParam("unaryBackward", op, param);
  const name = `unaryBackward ${op}`;
  const xs = ctx.input(name, "x", x, x.size, "f32");
  const dys = ctx.input(name, "dy", dy, xs.size, "f32");

  const dx = ctx.output(xs.size, "f32");
  if (xs.size > 0) {
    ctx.dispatch(unaryBackwardKernel(op), [xs, dys, dx], [xs.size, p], threadGrid(xs.size, WG));
  }
  return dx;
}

const BINARY_OPERATOR: Record<BinaryOp, string> = { add: "+", sub: "-", mul: "*", div: "/" };

/**
 * Binary kernel modes: "same" when both inputs have the output's shape, "same4" for the same with
 * four elements per thread, else "broadcast". Mesa's llvmpipe adapter serves each storage access
 * lane by lane (see matmul.ts), so "same4" needs a quarter of the loads and stores of "same".
 */
type BinaryMode = "same" | "same4" | "broadcast";

const binaryKernel = kernelCache((key: `${BinaryOp} ${BinaryMode}`) => {
  const [op, mode] = key.split(" ") as [BinaryOp, BinaryMode];
  const operator = BINARY_OPERATOR[op];
  const indexing = mode === "broadcast"
    ? unravelWgsl("i", "shape", ["a", "b"])
    : "let aOffset = i;\n  let bOffset = i;";
  const type = mode === "same4" ? "vec4<f32>" : "f32";
  return defineKernel({
    label: `binary ${key}`,
    workgroupSize: WG,
    buffers: [ro("lhs", type), ro("rhs", type), rw("ys", type)],
    params: [["n", "u32"], ...rankParams("shape"), ...rankParams("a"), ...rankParams("b")],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.n) { return; }
  ${indexing}
  ys[i] = lhs[aOffset] ${operator} rhs[bOffset];
}`,
  });
});

/** Strides of an input broadcast to `outShape`: 0 along axes where the input has size 1. */
function broadcastStrides(op: string, name: string, shape: number[], outShape: number[]): number[] {
  const strides = stridesOf(shape);
  return shape.map((dim, d) => {
    if (dim === outShape[d]) return dim === 1 ? 0 : strides[d];
    if (dim === 1) return 0;
    throw new Error(
      `${op}: ${name} [${shape.join(", ")}] does not broadcast to [${outShape.join(", ")}]`,
    );
  });
}

export function binary(
  ctx: KernelContext,
  op: BinaryOp,
  a: Storage,
  aShape: readonly number[],
  b: Storage,
  bShape: readonly number[],
  outShape: readonly number[],
): Storage {
  const name = `binary ${op}`;
  if (!(op in BINARY_OPERATOR)) {
    throw new Error(`binary: op ${String(op)} is not supported; use add, sub, mul or div`);
  }
  const n = checkShape(name, "outShape", outShape);
  const aSize = checkShape(name, "aShape", aShape);
  const bSize = checkShape(name, "bShape", bShape);
  if (aShape.length > outShape.length || bShape.length > outShape.length) {
    throw new Error(`${name}: input ranks exceed the rank ${outShape.length} of outShape`);
  }
  const as = ctx.input(name, "a", a, aSize, "f32");
  const bs = ctx.input(name, "b", b, bSize, "f32");

  const out = padShape(outShape);
  const aStrides = broadcastStrides(name, "a", padShape(aShape), out);
  const bStrides = broadcastStrides(name, "b", padShape(bShape), out);
  const same = aSize === n && bSize === n;

  const y = ctx.output(n, "f32");
  if (n === 0) return y;
  if (same && n % 4 === 0) {
    const params = [n / 4, ...out, ...aStrides, ...bStrides];
    ctx.dispatch(binaryKernel(`${op} same4`), [as, bs, y], params, threadGrid(n / 4, WG));
    return y;
  }
  const kernel = binaryKernel(`${op} ${same ? "same" : "broadcast"}`);
  ctx.dispatch(kernel, [as, bs, y], [n, ...out, ...aStrides, ...bStrides], threadGrid(n, WG));
  return y;
}
