/**
 * Fused causal attention on WebGPU: forward, backward, materialised probabilities and the top-w
 * key selection of dynamic mask attention.
 *
 * Every kernel runs one thread per row with no workgroup barriers. The forward pass and the query
 * half of backward give each thread one (batch·head, query) row with an online softmax over keys.
 * The key half of backward gives each thread one (batch·kvHead, key) column, so no two threads
 * write the same gradient element. Barriers are slow on Mesa's llvmpipe adapter, where the
 * thread-per-row softmax of `rows.ts` ran about 12× faster than its workgroup-per-row form. Each
 * kernel is generated for its head sizes, so the running accumulators are private arrays.
 */

import type { AttentionGrads, AttentionInputs, AttentionSpec, Storage } from "../../backend.ts";
import { checkAttentionSpec } from "../../cpu/attention.ts";
import { checkCount } from "./checks.ts";
import {
  type BufferDecl,
  defineKernel,
  kernelCache,
  type KernelContext,
  ro,
  rw,
  threadGrid,
} from "./kernel.ts";
import { fill } from "./layout.ts";

const WG = 64;

/** The optional inputs that a kernel reads, which are part of its cache key. */
interface Features {
  headDim: number;
  valueDim: number;
  biasKind: AttentionSpec["biasKind"];
  alibi: boolean;
  windows: boolean;
  keyMask: boolean;
  keyEnds: boolean;
  sink: boolean;
}

const PARAMS: [string, "u32" | "f32"][] = [
  ["threads", "u32"],
  ["heads", "u32"],
  ["kvHeads", "u32"],
  ["seqLen", "u32"],
  ["scale", "f32"],
  ["window", "u32"],
  ["initialKeys", "u32"],
];

function featuresOf(inputs: AttentionInputs, spec: AttentionSpec): Features {
  return {
    headDim: spec.headDim,
    valueDim: spec.valueDim,
    biasKind: spec.biasKind,
    alibi: !!inputs.alibiSlopes,
    windows: !!inputs.windows,
    keyMask: !!inputs.keyMask,
    keyEnds: !!inputs.keyEnds,
    sink: !!inputs.sink,
  };
}

function featureKey(f: Features): string {
  return JSON.stringify(f);
}

/** Returns the declarations of the optional input buffers in binding order. */
function optionalDecls(f: Features): BufferDecl[] {
  const decls: BufferDecl[] = [];
  if (f.biasKind !== "none") decls.push(ro("bias"));
  if (f.alibi) decls.push(ro("alibiSlopes"));
  if (f.windows) decls.push(ro("windows", "i32"));
  if (f.keyMask) decls.push(ro("keyMask"));
  if (f.keyEnds) decls.push(ro("keyEnds", "i32"));
  if (f.sink) decls.push(ro("sink"));
  return decls;
}

function optionalStorages(inputs: AttentionInputs, f: Features): Storage[] {
  const out: Storage[] = [];
  if (f.biasKind !== "none") out.push(inputs.bias!);
  if (f.alibi) out.push(inputs.alibiSlopes!);
  if (f.windows) out.push(inputs.windows!);
  if (f.keyMask) out.push(inputs.keyMask!);
  if (f.keyEnds) out.push(inputs.keyEnds!);
  if (f.sink) out.push(inputs.sink!);
  return out;
}

/** WGSL for the visibility rule and the logit of (query row, key j), shared by every kernel. */
function commonWgsl(f: Features): string {
  const windowOf = f.windows ? "u32(max(windows[h], 0))" : "params.window";
  const bias = f.biasKind === "keys"
    ? "s += bias[(b * params.kvHeads + kvh) * params.seqLen + j];"
    : f.biasKind === "full"
    ? "s += bias[row * params.seqLen + j];"
    : "";
  return `
const DK: u32 = ${f.headDim}u;
const DV: u32 = ${f.valueDim}u;
fn isVisible(b: u32, h: u32, kvh: u32, i: u32, j: u32) -> bool {
  if (j > i) { return false; }
  let w = ${windowOf};
  if (w > 0u && i - j >= w && j >= params.initialKeys) { return false; }
  ${f.keyMask ? "if (keyMask[b * params.seqLen + j] == 0.0f) { return false; }" : ""}
  ${
    f.keyEnds
      ? "if (i32(i) >= keyEnds[(b * params.kvHeads + kvh) * params.seqLen + j]) { return false; }"
      : ""
  }
  return true;
}
fn logitOf(b: u32, h: u32, kvh: u32, i: u32, j: u32, row: u32) -> f32 {
  let kBase = ((b * params.kvHeads + kvh) * params.seqLen + j) * DK;
  var s = 0.0f;
  for (var d = 0u; d < DK; d++) { s += q[row * DK + d] * k[kBase + d]; }
  s = s * params.scale;
  ${bias}
  ${f.alibi ? "s -= alibiSlopes[h] * f32(i - j);" : ""}
  return s;
}`;
}

/** Decodes a query-row thread into batch, head, query and key/value head. */
const ROW_ENTRY = `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = flatThread(gid, nwg);
  if (row >= params.threads) { return; }
  let i = row % params.seqLen;
  let bh = row / params.seqLen;
  let h = bh % params.heads;
  let b = bh / params.heads;
  let kvh = h / (params.heads / params.kvHeads);
  let kvBase = (b * params.kvHeads + kvh) * params.seqLen;`;

/** Below any finite logit, so exp(INIT − s) is 0 without computing with infinities. */
const INIT_MAX = "-3.0e38f";

const forwardKernel = kernelCache((key: string) => {
  const f = JSON.parse(key) as Features;
  return defineKernel({
    label: "attention",
    workgroupSize: WG,
    buffers: [ro("q"), ro("k"), ro("v"), ...optionalDecls(f), rw("out"), rw("lse")],
    params: PARAMS,
    body: `${commonWgsl(f)}
${ROW_ENTRY}
  var m = ${INIT_MAX};
  var l = 0.0f;
  ${f.sink ? "m = sink[row];\n  l = 1.0f;" : ""}
  var acc: array<f32, DV>;
  for (var j = 0u; j <= i; j++) {
    if (!isVisible(b, h, kvh, i, j)) { continue; }
    let s = logitOf(b, h, kvh, i, j, row);
    let mNew = max(m, s);
    let correction = exp(m - mNew);
    let p = exp(s - mNew);
    l = l * correction + p;
    let vBase = (kvBase + j) * DV;
    for (var d = 0u; d < DV; d++) { acc[d] = acc[d] * correction + p * v[vBase + d]; }
    m = mNew;
  }
  if (l == 0.0f) {
    for (var d = 0u; d < DV; d++) { out[row * DV + d] = 0.0f; }
    lse[row] = 0.0f;
    return;
  }
  for (var d = 0u; d < DV; d++) { out[row * DV + d] = acc[d] / l; }
  lse[row] = m + log(l);
}`,
  });
});

/** Per query row: dq, D = dO·O (for the key kernel), dsink and a "full" bias gradient. */
const backwardQueryKernel = kernelCache((key: string) => {
  const f = JSON.parse(key) as Features;
  const outputs = [rw("dq"), rw("rowDot")];
  if (f.biasKind === "full") outputs.push(rw("dbias"));
  if (f.sink) outputs.push(rw("dsink"));
  return defineKernel({
    label: "attentionBackward queries",
    workgroupSize: WG,
    buffers: [
      ro("q"),
      ro("k"),
      ro("v"),
      ...optionalDecls(f),
      ro("o"),
      ro("lse"),
      ro("dout"),
      ...outputs,
    ],
    params: PARAMS,
    body: `${commonWgsl(f)}
${ROW_ENTRY}
  var dotOut = 0.0f;
  for (var d = 0u; d < DV; d++) { dotOut += dout[row * DV + d] * o[row * DV + d]; }
  rowDot[row] = dotOut;
  ${f.sink ? "dsink[row] = -exp(sink[row] - lse[row]) * dotOut;" : ""}
  let rowLse = lse[row];
  var dqAcc: array<f32, DK>;
  for (var j = 0u; j < params.seqLen; j++) {
    if (!isVisible(b, h, kvh, i, j)) {
      ${f.biasKind === "full" ? "dbias[row * params.seqLen + j] = 0.0f;" : ""}
      continue;
    }
    let p = exp(logitOf(b, h, kvh, i, j, row) - rowLse);
    let vBase = (kvBase + j) * DV;
    var dp = 0.0f;
    for (var d = 0u; d < DV; d++) { dp += dout[row * DV + d] * v[vBase + d]; }
    let ds = p * (dp - dotOut);
    let kBase = (kvBase + j) * DK;
    for (var d = 0u; d < DK; d++) { dqAcc[d] += ds * k[kBase + d]; }
    ${f.biasKind === "full" ? "dbias[row * params.seqLen + j] = ds;" : ""}
  }
  for (var d = 0u; d < DK; d++) { dq[row * DK + d] = dqAcc[d] * params.scale; }
}`,
  });
});

/** Per (batch·kvHead, key) column: dk, dv and a "keys" bias gradient, summed over its queries. */
const backwardKeyKernel = kernelCache((key: string) => {
  const f = JSON.parse(key) as Features;
  const outputs = [rw("dk"), rw("dv")];
  if (f.biasKind === "keys") outputs.push(rw("dbias"));
  return defineKernel({
    label: "attentionBackward keys",
    workgroupSize: WG,
    buffers: [
      ro("q"),
      ro("k"),
      ro("v"),
      ...optionalDecls(f),
      ro("lse"),
      ro("dout"),
      ro("rowDot"),
      ...outputs,
    ],
    params: PARAMS,
    body: `${commonWgsl(f)}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let column = flatThread(gid, nwg);
  if (column >= params.threads) { return; }
  let j = column % params.seqLen;
  let bk = column / params.seqLen;
  let kvh = bk % params.kvHeads;
  let b = bk / params.kvHeads;
  let group = params.heads / params.kvHeads;
  var dkAcc: array<f32, DK>;
  var dvAcc: array<f32, DV>;
  var dbAcc = 0.0f;
  for (var g = 0u; g < group; g++) {
    let h = kvh * group + g;
    for (var i = j; i < params.seqLen; i++) {
      if (!isVisible(b, h, kvh, i, j)) { continue; }
      let row = (b * params.heads + h) * params.seqLen + i;
      let p = exp(logitOf(b, h, kvh, i, j, row) - lse[row]);
      var dp = 0.0f;
      for (var d = 0u; d < DV; d++) {
        dp += dout[row * DV + d] * v[column * DV + d];
        dvAcc[d] += p * dout[row * DV + d];
      }
      let ds = p * (dp - rowDot[row]);
      for (var d = 0u; d < DK; d++) { dkAcc[d] += ds * q[row * DK + d]; }
      dbAcc += ds;
    }
  }
  for (var d = 0u; d < DK; d++) { dk[column * DK + d] = dkAcc[d] * params.scale; }
  for (var d = 0u; d < DV; d++) { dv[column * DV + d] = dvAcc[d]; }
  ${f.biasKind === "keys" ? "dbias[column] = dbAcc;" : ""}
}`,
  });
});

const probsKernel = kernelCache((key: string) => {
  const f = JSON.parse(key) as Features;
  return defineKernel({
    label: "attentionProbs",
    workgroupSize: WG,
    buffers: [ro("q"), ro("k"), ...optionalDecls(f), rw("probs")],
    params: PARAMS,
    body: `${commonWgsl(f)}
${ROW_ENTRY}
  var m = ${INIT_MAX};
  var l = 0.0f;
  ${f.sink ? "m = sink[row];\n  l = 1.0f;" : ""}
  for (var j = 0u; j <= i; j++) {
    if (!isVisible(b, h, kvh, i, j)) { continue; }
    let s = logitOf(b, h, kvh, i, j, row);
    let mNew = max(m, s);
    l = l * exp(m - mNew) + exp(s - mNew);
    m = mNew;
  }
  let rowLse = select(0.0f, m + log(l), l > 0.0f);
  for (var j = 0u; j < params.seqLen; j++) {
    var p = 0.0f;
    if (isVisible(b, h, kvh, i, j)) { p = exp(logitOf(b, h, kvh, i, j, row) - rowLse); }
    probs[row * params.seqLen + j] = p;
  }
}`,
  });
});

/** Checks every storage of a call against the spec and returns the checked inputs. */
function checkInputs(
  ctx: KernelContext,
  op: string,
  inputs: AttentionInputs,
  spec: AttentionSpec,
  withValues: boolean,
): AttentionInputs {
  checkAttentionSpec(op, spec);
  const { batch: b, heads: h, kvHeads: hk, seqLen: t, headDim: dk, valueDim: dv } = spec;
  if (spec.biasKind !== "none" && !inputs.bias) {
    throw new Error(`${op}: biasKind is "${spec.biasKind}" but no bias was given`);
  }
  const biasSize = spec.biasKind === "keys" ? b * hk * t : b * h * t * t;
  const optional = <K extends keyof AttentionInputs>(
    name: K,
    size: number,
    dtype: "f32" | "i32",
  ) => inputs[name] ? ctx.input(op, name, inputs[name]!, size, dtype) : null;
  return {
    q: ctx.input(op, "q", inputs.q, b * h * t * dk, "f32"),
    k: ctx.input(op, "k", inputs.k, b * hk * t * dk, "f32"),
    v: withValues ? ctx.input(op, "v", inputs.v, b * hk * t * dv, "f32") : inputs.v,
    bias: spec.biasKind === "none" ? null : ctx.input(op, "bias", inputs.bias!, biasSize, "f32"),
    alibiSlopes: optional("alibiSlopes", h, "f32"),
    windows: optional("windows", h, "i32"),
    keyMask: optional("keyMask", b * t, "f32"),
    keyEnds: optional("keyEnds", b * hk * t, "i32"),
    sink: optional("sink", b * h * t, "f32"),
  };
}

function paramsOf(spec: AttentionSpec, threads: number): number[] {
  return [
    threads,
    spec.heads,
    spec.kvHeads,
    spec.seqLen,
    spec.scale,
    spec.window,
    spec.initialKeys,
  ];
}

/** True when a kernel would have nothing to do (generated WGSL cannot declare empty arrays). */
function isEmpty(spec: AttentionSpec): boolean {
  return spec.batch * spec.heads * spec.seqLen === 0 || spec.headDim === 0 ||
    spec.valueDim === 0;
}

export function attention(
  ctx: KernelContext,
  raw: AttentionInputs,
  spec: AttentionSpec,
): { out: Storage; lse: Storage } {
  const inputs = checkInputs(ctx, "attention", raw, spec, true);
  const rows = spec.batch * spec.heads * spec.seqLen;
  const out = ctx.output(rows * spec.valueDim, "f32");
  const lse = ctx.output(rows, "f32");
  if (isEmpty(spec)) {
    fill(ctx, out, 0);
    fill(ctx, lse, 0);
    return { out, lse };
  }
  const f = featuresOf(inputs, spec);
  ctx.dispatch(
    forwardKernel(featureKey(f)),
    [inputs.q, inputs.k, inputs.v, ...optionalStorages(inputs, f), out, lse],
    paramsOf(spec, rows),
    threadGrid(rows, WG),
  );
  return { out, lse };
}

export function attentionBackward(
  ctx: KernelContext,
  raw: AttentionInputs,
  saved: { out: Storage; lse: Storage; dout: Storage },
  spec: AttentionSpec,
): AttentionGrads {
  const op = "attentionBackward";
  const inputs = checkInputs(ctx, op, raw, spec, true);
  const { batch: b, heads: h, kvHeads: hk, seqLen: t, headDim: dk, valueDim: dv } = spec;
  const rows = b * h * t;
  const columns = b * hk * t;
  const o = ctx.input(op, "out", saved.out, rows * dv, "f32");
  const lse = ctx.input(op, "lse", saved.lse, rows, "f32");
  const dout = ctx.input(op, "dout", saved.dout, rows * dv, "f32");

  const grads: AttentionGrads = {
    dq: ctx.output(rows * dk, "f32"),
    dk: ctx.output(columns * dk, "f32"),
    dv: ctx.output(columns * dv, "f32"),
    dbias: spec.biasKind === "none" ? null : ctx.output(inputs.bias!.size, "f32"),
    dsink: inputs.sink ? ctx.output(rows, "f32") : null,
  };
  if (isEmpty(spec)) {
    for (const g of Object.values(grads)) if (g !== null) fill(ctx, g, 0);
    return grads;
  }

  const f = featuresOf(inputs, spec);
  const key = featureKey(f);
  const common = [inputs.q, inputs.k, inputs.v, ...optionalStorages(inputs, f)];
  const rowDot = ctx.output(rows, "f32");

  const queryOutputs = [grads.dq, rowDot];
  if (spec.biasKind === "full") queryOutputs.push(grads.dbias!);
  if (grads.dsink) queryOutputs.push(grads.dsink);
  ctx.dispatch(
    backwardQueryKernel(key),
    [...common, o, lse, dout, ...queryOutputs],
    paramsOf(spec, rows),
    threadGrid(rows, WG),
  );

  const keyOutputs = [grads.dk, grads.dv];
  if (spec.biasKind === "keys") keyOutputs.push(grads.dbias!);
  ctx.dispatch(
    backwardKeyKernel(key),
    [...common, lse, dout, rowDot, ...keyOutputs],
    paramsOf(spec, columns),
    threadGrid(columns, WG),
  );
  ctx.release(rowDot);
  return grads;
}

export function attentionProbs(
  ctx: KernelContext,
  raw: AttentionInputs,
  spec: AttentionSpec,
): Storage {
  const inputs = checkInputs(ctx, "attentionProbs", raw, spec, false);
  const rows = spec.batch * spec.heads * spec.seqLen;
  const probs = ctx.output(rows * spec.seqLen, "f32");
  if (isEmpty(spec)) {
    fill(ctx, probs, 0);
    return probs;
  }
  // The probabilities need no values, so the kernel is keyed with valueDim 1.
  const f = { ...featuresOf(inputs, spec), valueDim: 1 };
  ctx.dispatch(
    probsKernel(featureKey(f)),
    [inputs.q, inputs.k, ...optionalStorages(inputs, f), probs],
    paramsOf(spec, rows),
    threadGrid(rows, WG),
  );
  return probs;
}

/** One thread per (row, key j): the first query at which `keep` keys rank above j, else seqLen. */
const keepEndsKernel = defineKernel({
  label: "attentionKeepEnds",
  workgroupSize: WG,
  buffers: [ro("scores"), rw("ends", "i32")],
  params: [["threads", "u32"], ["seqLen", "u32"], ["keep", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let index = flatThread(gid, nwg);
  if (index >= params.threads) { return; }
  let j = index % params.seqLen;
  let base = index - j;
  let score = scores[index];
  // Earlier keys rank above j only when strictly higher; later keys also on ties.
  var above = 0u;
  for (var a = 0u; a < j; a++) { if (scores[base + a] > score) { above++; } }
  var end = params.seqLen;
  if (above >= params.keep) {
    end = j;
  } else {
    for (var i = j + 1u; i < params.seqLen; i++) {
      if (scores[base + i] >= score) { above++; }
      if (above >= params.keep) { end = i; break; }
    }
  }
  ends[index] = i32(end);
}`,
});

export function attentionKeepEnds(
  ctx: KernelContext,
  scores: Storage,
  rows: number,
  seqLen: number,
  keep: number,
): Storage {
  const op = "attentionKeepEnds";
  checkCount(op, "rows", rows);
  checkCount(op, "seqLen", seqLen);
  checkCount(op, "keep", keep);
  const s = ctx.input(op, "scores", scores, rows * seqLen, "f32");
  const ends = ctx.output(rows * seqLen, "i32");
  if (rows * seqLen > 0) {
    ctx.dispatch(
      keepEndsKernel,
      [s, ends],
      [rows * seqLen, seqLen, keep],
      threadGrid(rows * seqLen, WG),
    );
  }
  return ends;
}
