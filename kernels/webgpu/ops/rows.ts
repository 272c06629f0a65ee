/**
 * Row-wise kernels: softmax with an optional causal mask, its backward, and fused softmax
 * cross-entropy. Each row is handled by one workgroup: threads visit columns with a stride of
 * `WG`, then combine their partial results in a fixed tree, so every row reduces in the same order
 * on every run.
 */

import type { Storage } from "../../backend.ts";
import { checkCount } from "./checks.ts";
import { defineKernel, groupGrid, type KernelContext, ro, rw, threadGrid } from "./kernel.ts";

/** Threads per row; rows are usually short (attention, hidden sizes), so 64 wastes little. */
export const ROW_WG = 64;

/**
 * Workgroup tree reductions. Every thread of the workgroup must call them (they contain
 * barriers), and they return the same total to all threads.
 */
export const ROW_REDUCE_WGSL = `
var<workgroup> scratch: array<f32, WG>;
fn rowSum(lid: u32, value: f32) -> f32 {
  scratch[lid] = value;
  workgroupBarrier();
  for (var width = WG / 2u; width > 0u; width = width / 2u) {
    if (lid < width) { scratch[lid] = scratch[lid] + scratch[lid + width]; }
    workgroupBarrier();
  }
  let total = scratch[0];
  workgroupBarrier();
  return total;
}
fn rowMax(lid: u32, value: f32) -> f32 {
  scratch[lid] = value;
  workgroupBarrier();
  for (var width = WG / 2u; width > 0u; width = width / 2u) {
    if (lid < width) { scratch[lid] = max(scratch[lid], scratch[lid + width]); }
    workgroupBarrier();
  }
  let total = scratch[0];
  workgroupBarrier();
  return total;
}`;

/** Entry point of a one-workgroup-per-row kernel; `row` may exceed the row count in a spilled grid. */
export const ROW_ENTRY = `
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = flatGroup(wid, nwg);
  let valid = row < params.rows;
  let r = min(row, params.rows - 1u);
  let start = r * params.cols;`;

const softmaxKernel = defineKernel({
  label: "softmax",
  workgroupSize: ROW_WG,
  buffers: [ro("x"), rw("y")],
  params: [["rows", "u32"], ["cols", "u32"], ["causalQueries", "u32"]],
  body: `${ROW_REDUCE_WGSL}
${ROW_ENTRY}
  // Causal row r attends to key columns c <= (r mod T) + (cols - T); none when that is negative.
  var visible = params.cols;
  if (params.causalQueries > 0u) {
    let last = i32(r % params.causalQueries) + i32(params.cols) - i32(params.causalQueries);
    visible = u32(clamp(last + 1, 0, i32(params.cols)));
  }

  var localMax = negInf();
  for (var c = lid; c < visible; c += WG) { localMax = max(localMax, x[start + c]); }
  let rowMaximum = rowMax(lid, localMax);

  var localSum = 0.0f;
  for (var c = lid; c < visible; c += WG) { localSum += exp(x[start + c] - rowMaximum); }
  let total = rowSum(lid, localSum);

  if (!valid) { return; }
  for (var c = lid; c < params.cols; c += WG) {
    y[start + c] = select(0.0f, exp(x[start + c] - rowMaximum) / total, c < visible);
  }
}`,
});

export function softmax(
  ctx: KernelContext,
  x: Storage,
  rows: number,
  cols: number,
  causalQueries: number,
): Storage {
  const op = "softmax";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  checkCount(op, "causalQueries", causalQueries);
  if (causalQueries > 0 && rows % causalQueries !== 0) {
    throw new Error(
      `${op}: rows is ${rows}, not a multiple of causalQueries ${causalQueries}; ` +
        "causal rows must come in whole blocks of queries",
    );
  }
  const xs = ctx.input(op, "x", x, rows * cols, "f32");

  const y = ctx.output(rows * cols, "f32");
  if (rows * cols > 0) {
    ctx.dispatch(softmaxKernel, [xs, y], [rows, cols, causalQueries], groupGrid(rows));
  }
  return y;
}

const softmaxBackwardKernel = defineKernel({
  label: "softmaxBackward",
  workgroupSize: ROW_WG,
  buffers: [ro("y"), ro("dy"), rw("dx")],
  params: [["rows", "u32"], ["cols", "u32"]],
  body: `${ROW_REDUCE_WGSL}
${ROW_ENTRY}
  var localDot = 0.0f;
  for (var c = lid; c < params.cols; c += WG) { localDot += dy[start + c] * y[start + c]; }
  let dotProduct = rowSum(lid, localDot);

  if (!valid) { return; }
  for (var c = lid; c < params.cols; c += WG) {
    dx[start + c] = y[start + c] * (dy[start + c] - dotProduct);
  }
}`,
});

export function softmaxBackward(
  ctx: KernelContext,
  y: Storage,
  dy: Storage,
  rows: number,
  cols: number,
): Storage {
  const op = "softmaxBackward";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  const ys = ctx.input(op, "y", y, rows * cols, "f32");
  const dys = ctx.input(op, "dy", dy, rows * cols, "f32");

  const dx = ctx.output(rows * cols, "f32");
  if (rows * cols > 0) {
    ctx.dispatch(softmaxBackwardKernel, [ys, dys, dx], [rows, cols], groupGrid(rows));
  }
  return dx;
}

/**
 * Per-row log-sum-exp (max subtracted) and loss. `rowLoss` contains pairs (loss, counted): (0, 0) for
 * an ignored row. A target outside [0, cols) that is not ignoreIndex cannot raise an error on the
 * GPU, so its row counts with loss NaN, which makes the mean loss NaN.
 */
const crossEntropyRowsKernel = defineKernel({
  label: "crossEntropy rows",
  workgroupSize: ROW_WG,
  buffers: [ro("logits"), ro("targets", "i32"), rw("lse"), rw("rowLoss")],
  params: [["rows", "u32"], ["cols", "u32"], ["ignoreIndex", "i32"]],
  body: `${ROW_REDUCE_WGSL}
${ROW_ENTRY}
  var localMax = negInf();
  for (var c = lid; c < params.cols; c += WG) { localMax = max(localMax, logits[start + c]); }
  let rowMaximum = rowMax(lid, localMax);

  var localSum = 0.0f;
  for (var c = lid; c < params.cols; c += WG) { localSum += exp(logits[start + c] - rowMaximum); }
  let total = rowSum(lid, localSum);

  if (!valid || lid != 0u) { return; }
  let rowLse = rowMaximum + log(total);
  lse[r] = rowLse;
  let targetId = targets[r];
  if (targetId == params.ignoreIndex) {
    rowLoss[2u * r] = 0.0f;
    rowLoss[2u * r + 1u] = 0.0f;
  } else if (targetId < 0 || targetId >= i32(params.cols)) {
    rowLoss[2u * r] = bitcast<f32>(0x7fc00000u);
    rowLoss[2u * r + 1u] = 1.0f;
  } else {
    rowLoss[2u * r] = rowLse - logits[start + u32(targetId)];
    rowLoss[2u * r + 1u] = 1.0f;
  }
}`,
});

/** Sums the row losses and counts in one workgroup, in a fixed order, and takes the mean. */
const crossEntropyMeanKernel = defineKernel({
  label: "crossEntropy mean",
  workgroupSize: 256,
  buffers: [ro("rowLoss"), rw("loss"), rw("count")],
  params: [["rows", "u32"]],
  body: `
var<workgroup> sums: array<f32, WG>;
var<workgroup> counts: array<f32, WG>;
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  var localSum = 0.0f;
  var localCount = 0.0f;
  for (var r = lid; r < params.rows; r += WG) {
    localSum += rowLoss[2u * r];
    localCount += rowLoss[2u * r + 1u];
  }
  sums[lid] = localSum;
  counts[lid] = localCount;
  workgroupBarrier();
  for (var width = WG / 2u; width > 0u; width = width / 2u) {
    if (lid < width) {
      sums[lid] = sums[lid] + sums[lid + width];
      counts[lid] = counts[lid] + counts[lid + width];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let counted = counts[0];
    loss[0] = select(0.0f, sums[0] / counted, counted > 0.0f);
    count[0] = counted;
  }
}`,
});

export function crossEntropy(
  ctx: KernelContext,
  logits: Storage,
  targets: Storage,
  rows: number,
  cols: number,
  ignoreIndex: number,
): { loss: Storage; lse: Storage; count: Storage } {
  const op = "crossEntropy";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  checkIgnoreIndex(op, ignoreIndex);
  const xs = ctx.input(op, "logits", logits, rows * cols, "f32");
  const ts = ctx.input(op, "targets", targets, rows, "i32");

  const lse = ctx.output(rows, "f32");
  const loss = ctx.output(1, "f32");
  const count = ctx.output(1, "f32");
  const rowLoss = ctx.output(2 * rows, "f32");
  if (rows > 0) {
    ctx.dispatch(
      crossEntropyRowsKernel,
      [xs, ts, lse, rowLoss],
      [rows, cols, ignoreIndex],
      groupGrid(rows),
    );
  }
  ctx.dispatch(crossEntropyMeanKernel, [rowLoss, loss, count], [rows], [1, 1, 1]);
  ctx.release(rowLoss);
  return { loss, lse, count };
}

const CE_WG = 256;

const crossEntropyBackwardKernel = defineKernel({
  label: "crossEntropyBackward",
  workgroupSize: CE_WG,
  buffers: [ro("logits"), ro("targets", "i32"), ro("lse"), ro("count"), ro("dy"), rw("dlogits")],
  params: [["rows", "u32"], ["cols", "u32"], ["ignoreIndex", "i32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flatThread(gid, nwg);
  if (i >= params.rows * params.cols) { return; }
  let r = i / params.cols;
  let c = i % params.cols;
  let targetId = targets[r];
  if (targetId == params.ignoreIndex) {
    dlogits[i] = 0.0f;
    return;
  }
  if (targetId < 0 || targetId >= i32(params.cols)) {
    dlogits[i] = bitcast<f32>(0x7fc00000u);
    return;
  }
  let p = exp(logits[i] - lse[r]);
  let scale = dy[0] / max(count[0], 1.0f);
  dlogits[i] = select(p, p - 1.0f, i32(c) == targetId) * scale;
}`,
});

export function crossEntropyBackward(
  ctx: KernelContext,
  inputs: { logits: Storage; targets: Storage; lse: Storage; count: Storage; dy: Storage },
  rows: number,
  cols: number,
  ignoreIndex: number,
): Storage {
  const op = "crossEntropyBackward";
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  checkIgnoreIndex(op, ignoreIndex);
  const xs = ctx.input(op, "logits", inputs.logits, rows * cols, "f32");
  const ts = ctx.input(op, "targets", inputs.targets, rows, "i32");
  const lse = ctx.input(op, "lse", inputs.lse, rows, "f32");
  const count = ctx.input(op, "count", inputs.count, 1, "f32");
  const dy = ctx.input(op, "dy", inputs.dy, 1, "f32");

  const dlogits = ctx.output(rows * cols, "f32");
  if (rows * cols > 0) {
    ctx.dispatch(
      crossEntropyBackwardKernel,
      [xs, ts, lse, count, dy, dlogits],
      [rows, cols, ignoreIndex],
      threadGrid(rows * cols, CE_WG),
    );
  }
  return dlogits;
}

function checkIgnoreIndex(op: string, ignoreIndex: number): void {
  if (!Number.isInteger(ignoreIndex) || ignoreIndex < -(2 ** 31) || ignoreIndex >= 2 ** 31) {
    throw new Error(`${op}: ignoreIndex is ${ignoreIndex} but must be an int32`);
  }
}
