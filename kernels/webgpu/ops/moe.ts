/**
 * Mixture-of-experts kernels: top-k per row, column and row gathers with their scatter-add
 * gradients, capacity dropping, the counting sort of assignments by expert, and grouped matrix
 * products over contiguous row groups.
 *
 * Every kernel is deterministic without float atomics. Selection and sorting kernels give one
 * thread a whole row or a whole expert, which suits the small expert counts and token groups of
 * this harness. The grouped products follow `matmul.ts`: each thread keeps an 8×8 block in
 * registers and reads storage directly, because workgroup-memory tiling with barriers is slow on
 * Mesa's llvmpipe adapter. The host does not know the group sizes without a readback, so the grid
 * covers the worst case (every row in one group) and threads past their group's end return at
 * once; an empty group costs one offsets read per thread.
 */

import type { Storage } from "../../backend.ts";
import { checkCount } from "./checks.ts";
import { scatterAdd } from "./indexing.ts";
import {
  defineKernel,
  kernelCache,
  type KernelContext,
  MAX_GROUPS_PER_DIM,
  ro,
  rw,
  threadGrid,
} from "./kernel.ts";

const WG = 64;
/** Rows and columns of an output block per thread in the grouped products. */
const BLOCK = 8;

function checkCounts(op: string, counts: Record<string, number>): void {
  for (const [name, value] of Object.entries(counts)) checkCount(op, name, value);
}

// --- top-k and columns ---------------------------------------------------------------------------

/** One thread per row; pass j takes the largest score ranked after pass j − 1's pick. */
const topKKernel = defineKernel({
  label: "topK",
  workgroupSize: WG,
  buffers: [ro("scores"), rw("indices", "i32"), rw("values")],
  params: [["rows", "u32"], ["cols", "u32"], ["k", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = flatThread(gid, nwg);
  if (row >= params.rows) { return; }
  let base = row * params.cols;
  var previous = -1;
  var previousScore = 0.0f;
  var failed = false;
  for (var j = 0u; j < params.k; j++) {
    var best = -1;
    var bestScore = 0.0f;
    if (!failed) {
      for (var c = 0u; c < params.cols; c++) {
        let s = scores[base + c];
        let eligible = previous < 0 || s < previousScore ||
          (s == previousScore && i32(c) > previous);
        if (eligible && (best < 0 || s > bestScore)) {
          best = i32(c);
          bestScore = s;
        }
      }
    }
    let out = row * params.k + j;
    if (best < 0) {
      failed = true;
      indices[out] = -1;
      values[out] = bitcast<f32>(0x7fc00000u);
    } else {
      indices[out] = best;
      values[out] = bestScore;
    }
    previous = best;
    previousScore = bestScore;
  }
}`,
});

export function topK(
  ctx: KernelContext,
  scores: Storage,
  rows: number,
  cols: number,
  k: number,
): { indices: Storage; values: Storage } {
  const op = "topK";
  checkCounts(op, { rows, cols, k });
  if (k > cols) {
    throw new Error(`${op}: k is ${k} but rows have only ${cols} columns; choose k <= ${cols}`);
  }
  const s = ctx.input(op, "scores", scores, rows * cols, "f32");

  const indices = ctx.output(rows * k, "i32");
  const values = ctx.output(rows * k, "f32");
  if (rows * k > 0) {
    ctx.dispatch(topKKernel, [s, indices, values], [rows, cols, k], threadGrid(rows, WG));
  }
  return { indices, values };
}

const gatherColumnsKernel = defineKernel({
  label: "gatherColumns",
  workgroupSize: WG,
  buffers: [ro("x", "u32"), ro("indices", "i32"), rw("out", "u32")],
  params: [["rows", "u32"], ["cols", "u32"], ["k", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatThread(gid, nwg);
  if (t >= params.rows * params.k) { return; }
  let r = t / params.k;
  let c = indices[t];
  if (c < 0 || c >= i32(params.cols)) {
    out[t] = 0u;
    return;
  }
  out[t] = x[r * params.cols + u32(c)];
}`,
});

export function gatherColumns(
  ctx: KernelContext,
  x: Storage,
  indices: Storage,
  rows: number,
  cols: number,
  k: number,
): Storage {
  const op = "gatherColumns";
  checkCounts(op, { rows, cols, k });
  const xs = ctx.input(op, "x", x, rows * cols, "any");
  const is = ctx.input(op, "indices", indices, rows * k, "i32");

  const out = ctx.output(rows * k, xs.dtype);
  if (rows * k > 0) {
    ctx.dispatch(gatherColumnsKernel, [xs, is, out], [rows, cols, k], threadGrid(rows * k, WG));
  }
  return out;
}

/** One thread per output element, summing the k picks of its row in order. */
const scatterColumnsKernel = defineKernel({
  label: "scatterColumns",
  workgroupSize: WG,
  buffers: [ro("dy"), ro("indices", "i32"), rw("out")],
  params: [["rows", "u32"], ["cols", "u32"], ["k", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatThread(gid, nwg);
  if (t >= params.rows * params.cols) { return; }
  let r = t / params.cols;
  let c = i32(t % params.cols);
  var sum = 0.0f;
  for (var j = 0u; j < params.k; j++) {
    if (indices[r * params.k + j] == c) { sum += dy[r * params.k + j]; }
  }
  out[t] = sum;
}`,
});

export function scatterColumns(
  ctx: KernelContext,
  dy: Storage,
  indices: Storage,
  rows: number,
  cols: number,
  k: number,
): Storage {
  const op = "scatterColumns";
  checkCounts(op, { rows, cols, k });
  const dys = ctx.input(op, "dy", dy, rows * k, "f32");
  const is = ctx.input(op, "indices", indices, rows * k, "i32");

  const out = ctx.output(rows * cols, "f32");
  if (rows * cols > 0) {
    ctx.dispatch(
      scatterColumnsKernel,
      [dys, is, out],
      [rows, cols, k],
      threadGrid(rows * cols, WG),
    );
  }
  return out;
}

// --- rows ------------------------------------------------------------------------------------------

const gatherRowsKernel = defineKernel({
  label: "gatherRows",
  workgroupSize: WG,
  buffers: [ro("x", "u32"), ro("index", "i32"), rw("out", "u32")],
  params: [["n", "u32"], ["m", "u32"], ["cols", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatThread(gid, nwg);
  if (t >= params.m * params.cols) { return; }
  let i = t / params.cols;
  let c = t % params.cols;
  let row = index[i];
  if (row < 0 || row >= i32(params.n)) {
    out[t] = 0u;
    return;
  }
  out[t] = x[u32(row) * params.cols + c];
}`,
});

export function gatherRows(
  ctx: KernelContext,
  x: Storage,
  index: Storage,
  n: number,
  m: number,
  cols: number,
): Storage {
  const op = "gatherRows";
  checkCounts(op, { n, m, cols });
  const xs = ctx.input(op, "x", x, n * cols, "any");
  const is = ctx.input(op, "index", index, m, "i32");

  const out = ctx.output(m * cols, xs.dtype);
  if (m * cols > 0) {
    ctx.dispatch(gatherRowsKernel, [xs, is, out], [n, m, cols], threadGrid(m * cols, WG));
  }
  return out;
}

/**
 * Reuses the embedding gradient kernel, because it already sums rows in increasing position and
 * skips ids outside [0, n).
 */
export function scatterAddRows(
  ctx: KernelContext,
  dy: Storage,
  index: Storage,
  m: number,
  n: number,
  cols: number,
): Storage {
  return scatterAdd(ctx, dy, index, m, n, cols);
}

// --- dispatch plans --------------------------------------------------------------------------------

/** One thread per assignment, counting the assignments of its expert ranked ahead of it. */
const dropKernel = kernelCache((withPriority: boolean) =>
  defineKernel({
    label: `dropOverCapacity ${withPriority ? "priority" : "position"}`,
    workgroupSize: WG,
    buffers: [
      ro("experts", "i32"),
      ...(withPriority ? [ro("priority")] : []),
      rw("out", "i32"),
    ],
    params: [["count", "u32"], ["numExperts", "u32"], ["capacity", "u32"]],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let a = flatThread(gid, nwg);
  if (a >= params.count) { return; }
  let e = experts[a];
  if (e < 0 || e >= i32(params.numExperts)) {
    out[a] = -1;
    return;
  }
  ${withPriority ? "let p = priority[a];" : ""}
  var rank = 0u;
  for (var b = 0u; b < params.count; b++) {
    if (b == a || experts[b] != e) { continue; }
    ${
      withPriority
        ? "let ahead = priority[b] > p || (priority[b] == p && b < a);"
        : "let ahead = b < a;"
    }
    if (ahead) { rank++; }
  }
  out[a] = select(-1, e, rank < params.capacity);
}`,
  })
);

export function dropOverCapacity(
  ctx: KernelContext,
  experts: Storage,
  priority: Storage | null,
  count: number,
  numExperts: number,
  capacity: number,
): Storage {
  const op = "dropOverCapacity";
  checkCounts(op, { count, numExperts, capacity });
  const es = ctx.input(op, "experts", experts, count, "i32");
  const ps = priority === null ? null : ctx.input(op, "priority", priority, count, "f32");

  const out = ctx.output(count, "i32");
  if (count > 0) {
    ctx.dispatch(
      dropKernel(ps !== null),
      ps === null ? [es, out] : [es, ps, out],
      [count, numExperts, Math.min(capacity, 0xffffffff)],
      threadGrid(count, WG),
    );
  }
  return out;
}

/**
 * One workgroup. Each thread counts the assignments of its experts, thread 0 turns the counts
 * into offsets, and then each thread writes its experts' assignments in position order.
 */
const sortKernel = defineKernel({
  label: "sortByExpert",
  workgroupSize: WG,
  buffers: [
    ro("experts", "i32"),
    rw("order", "i32"),
    rw("positions", "i32"),
    rw(
      "offsets",
      "i32",
    ),
  ],
  params: [["count", "u32"], ["numExperts", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let numExperts = params.numExperts;
  for (var e = lid; e < numExperts; e += WG) {
    var c = 0;
    for (var a = 0u; a < params.count; a++) {
      if (experts[a] == i32(e)) { c++; }
    }
    offsets[e + 1u] = c;
  }
  storageBarrier();
  workgroupBarrier();
  if (lid == 0u) {
    offsets[0] = 0;
    for (var e = 0u; e < numExperts; e++) { offsets[e + 1u] += offsets[e]; }
  }
  storageBarrier();
  workgroupBarrier();

  for (var e = lid; e < numExperts; e += WG) {
    var row = offsets[e];
    for (var a = 0u; a < params.count; a++) {
      if (experts[a] == i32(e)) {
        order[row] = i32(a);
        positions[a] = row;
        row++;
      }
    }
  }
  for (var r = u32(offsets[numExperts]) + lid; r < params.count; r += WG) { order[r] = -1; }
  for (var a = lid; a < params.count; a += WG) {
    let e = experts[a];
    if (e < 0 || e >= i32(numExperts)) { positions[a] = -1; }
  }
}`,
});

export function sortByExpert(
  ctx: KernelContext,
  experts: Storage,
  count: number,
  numExperts: number,
): { order: Storage; positions: Storage; offsets: Storage } {
  const op = "sortByExpert";
  checkCounts(op, { count, numExperts });
  const es = ctx.input(op, "experts", experts, count, "i32");

  const order = ctx.output(count, "i32");
  const positions = ctx.output(count, "i32");
  const offsets = ctx.output(numExperts + 1, "i32");
  ctx.dispatch(sortKernel, [es, order, positions, offsets], [count, numExperts], [1, 1, 1]);
  return { order, positions, offsets };
}

// --- grouped products ------------------------------------------------------------------------------

/**
 * Grid slice z = e < numExperts computes group e's rows; slice z = numExperts zeroes the rows at
 * and past offsets[numExperts].
 */
const groupedMatmulKernel = kernelCache((vectorized: boolean) => {
  const width = vectorized ? 4 : 1;
  const type = vectorized ? "vec4<f32>" : "f32";
  const product = (x: string, y: string) => (vectorized ? `dot(${x}, ${y})` : `${x} * ${y}`);

  const lines: string[] = [];
  for (let r = 0; r < BLOCK; r++) {
    lines.push(`let a${r} = x[min(row + ${r}u, lastRow) * kw + kk];`);
  }
  for (let c = 0; c < BLOCK; c++) {
    lines.push(`let b${c} = w[wBase + min(col + ${c}u, lastCol) * kw + kk];`);
  }
  for (let r = 0; r < BLOCK; r++) {
    for (let c = 0; c < BLOCK; c++) {
      lines.push(`acc[${r * BLOCK + c}] += ${product(`a${r}`, `b${c}`)};`);
    }
  }

  return defineKernel({
    label: `groupedMatmul ${vectorized ? "vec4" : "scalar"}`,
    workgroupSize: WG,
    buffers: [ro("x", type), ro("w", type), ro("offsets", "i32"), rw("y")],
    params: [["rows", "u32"], ["numExperts", "u32"], ["dIn", "u32"], ["dOut", "u32"]],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.z;
  let blocksN = (params.dOut + ${BLOCK - 1}u) / ${BLOCK}u;
  let col = (gid.x % blocksN) * ${BLOCK}u;
  var start = u32(offsets[params.numExperts]);
  var end = params.rows;
  if (e < params.numExperts) {
    start = u32(offsets[e]);
    end = u32(offsets[e + 1u]);
  }
  let row = start + (gid.x / blocksN) * ${BLOCK}u;
  if (row >= end) { return; }

  var acc: array<f32, ${BLOCK * BLOCK}>;
  if (e < params.numExperts) {
    let kw = params.dIn / ${width}u;
    let wBase = e * params.dOut * kw;
    // Rows and columns past the edge load a valid element and are never stored.
    let lastRow = end - 1u;
    let lastCol = params.dOut - 1u;
    for (var kk = 0u; kk < kw; kk++) {
      ${lines.join("\n      ")}
    }
  }

  for (var r = 0u; r < ${BLOCK}u; r++) {
    for (var q = 0u; q < ${BLOCK}u; q++) {
      if (row + r < end && col + q < params.dOut) {
        y[(row + r) * params.dOut + col + q] = acc[r * ${BLOCK}u + q];
      }
    }
  }
}`,
  });
});

function checkGrid(op: string, groups: number, slices: number): void {
  if (groups > MAX_GROUPS_PER_DIM || slices > MAX_GROUPS_PER_DIM) {
    throw new Error(
      `${op}: needs a grid of ${groups}×1×${slices} workgroups, over the limit of ` +
        `${MAX_GROUPS_PER_DIM} per dimension; use fewer rows or experts per call`,
    );
  }
}

export function groupedMatmul(
  ctx: KernelContext,
  x: Storage,
  w: Storage,
  offsets: Storage,
  rows: number,
  numExperts: number,
  dIn: number,
  dOut: number,
): Storage {
  const op = "groupedMatmul";
  checkCounts(op, { rows, numExperts, dIn, dOut });
  const xs = ctx.input(op, "x", x, rows * dIn, "f32");
  const ws = ctx.input(op, "w", w, numExperts * dOut * dIn, "f32");
  const os = ctx.input(op, "offsets", offsets, numExperts + 1, "i32");

  const y = ctx.output(rows * dOut, "f32");
  if (rows * dOut === 0) return y;
  const threads = Math.ceil(rows / BLOCK) * Math.ceil(dOut / BLOCK);
  const groups = Math.ceil(threads / WG);
  checkGrid(op, groups, numExperts + 1);
  ctx.dispatch(
    groupedMatmulKernel(dIn % 4 === 0),
    [xs, ws, os, y],
    [rows, numExperts, dIn, dOut],
    [groups, 1, numExperts + 1],
  );
  return y;
}

/** One thread per 8×8 block of one expert's [dOut, dIn] gradient, summing its rows in order. */
const weightGradKernel = defineKernel({
  label: "groupedMatmulWeightGrad",
  workgroupSize: WG,
  buffers: [ro("dy"), ro("x"), ro("offsets", "i32"), rw("dw")],
  params: [["numExperts", "u32"], ["dIn", "u32"], ["dOut", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.z;
  let blocksIn = (params.dIn + ${BLOCK - 1}u) / ${BLOCK}u;
  let o = (gid.x / blocksIn) * ${BLOCK}u;
  let i = (gid.x % blocksIn) * ${BLOCK}u;
  if (o >= params.dOut) { return; }
  let lastOut = params.dOut - 1u;
  let lastIn = params.dIn - 1u;

  var acc: array<f32, ${BLOCK * BLOCK}>;
  let end = u32(offsets[e + 1u]);
  for (var r = u32(offsets[e]); r < end; r++) {
    var g: array<f32, ${BLOCK}>;
    var v: array<f32, ${BLOCK}>;
    for (var q = 0u; q < ${BLOCK}u; q++) {
      g[q] = dy[r * params.dOut + min(o + q, lastOut)];
      v[q] = x[r * params.dIn + min(i + q, lastIn)];
    }
    for (var p = 0u; p < ${BLOCK}u; p++) {
      for (var q = 0u; q < ${BLOCK}u; q++) { acc[p * ${BLOCK}u + q] += g[p] * v[q]; }
    }
  }

  let base = e * params.dOut * params.dIn;
  for (var p = 0u; p < ${BLOCK}u; p++) {
    for (var q = 0u; q < ${BLOCK}u; q++) {
      if (o + p < params.dOut && i + q < params.dIn) {
        dw[base + (o + p) * params.dIn + i + q] = acc[p * ${BLOCK}u + q];
      }
    }
  }
}`,
});

export function groupedMatmulWeightGrad(
  ctx: KernelContext,
  dy: Storage,
  x: Storage,
  offsets: Storage,
  rows: number,
  numExperts: number,
  dIn: number,
  dOut: number,
): Storage {
  const op = "groupedMatmulWeightGrad";
  checkCounts(op, { rows, numExperts, dIn, dOut });
  const dys = ctx.input(op, "dy", dy, rows * dOut, "f32");
  const xs = ctx.input(op, "x", x, rows * dIn, "f32");
  const os = ctx.input(op, "offsets", offsets, numExperts + 1, "i32");

  const dw = ctx.output(numExperts * dOut * dIn, "f32");
  if (numExperts * dOut * dIn === 0) return dw;
  const blocks = Math.ceil(dOut / BLOCK) * Math.ceil(dIn / BLOCK);
  const groups = Math.ceil(blocks / WG);
  checkGrid(op, groups, numExperts);
  ctx.dispatch(
    weightGradKernel,
    [dys, xs, os, dw],
    [numExperts, dIn, dOut],
    [groups, 1, numExperts],
  );
  return dw;
}
