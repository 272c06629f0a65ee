/**
 * Row-wise kernels: softmax with an optional causal mask, its backward, and fused softmax
 * cross-entropy.
 *
 * Each kernel comes in two modes. In "group" mode one workgroup handles a row: threads visit
 * columns with a stride of `WG` and combine partial results in a fixed tree. In "thread" mode one
 * thread handles a whole row, which suits short rows: on Mesa's llvmpipe adapter a softmax over
 * 4096 rows of 64 took 25 ms in group mode, where every barrier is costly, and about 2 ms in
 * thread mode (a one-off timing on the 2-core development machine, December 2026). Both modes
 * sum each row in a fixed order, so every run reduces the same way.
 */

import type { Storage } from "../../backend.ts";
import { checkCount } from "./checks.ts";
import {
  defineKernel,
  type Grid,
  groupGrid,
  kernelCache,
  type KernelContext,
  ro,
  rw,
  threadGrid,
} from "./kernel.ts";

/** Threads per row in group mode, and rows per workgroup in thread mode. */
export const ROW_WG = 64;

/** Rows up to this length use thread mode. */
const THREAD_MODE_MAX_COLS = 512;

export type RowMode = "group" | "thread";

/** The mode for rows of `cols` elements. */
export function rowMode(cols: number): RowMode {
  return cols <= THREAD_MODE_MAX_COLS ? "thread" : "group";
}

/** The grid for `rows` rows in a mode. */
export function rowGrid(mode: RowMode, rows: number): Grid {
  return mode === "thread" ? threadGrid(rows, ROW_WG) : groupGrid(rows);
}

/**
 * Workgroup tree reductions. Every thread of the workgroup must call them (they contain
 * barriers), and they return the same total to all threads.
 */
const GROUP_REDUCE_WGSL = `
const STRIDE: u32 = WG;
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
const GROUP_ENTRY = `
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = flatGroup(wid, nwg);
  let valid = row < params.rows;
  let r = min(row, params.rows - 1u);
  let start = r * params.cols;`;

/** Thread mode: the reductions are the identity and the column stride is 1. */
const THREAD_PRELUDE = `
const STRIDE: u32 = 1u;
fn rowSum(lid: u32, value: f32) -> f32 { return value; }
fn rowMax(lid: u32, value: f32) -> f32 { return value; }
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = flatThread(gid, nwg);
  if (row >= params.rows) { return; }
  let valid = true;
  let r = row;
  let lid = 0u;
  let start = r * params.cols;`;

/**
 * The start of a row kernel's WGSL up to the opening of \`main\`, which defines \`r\` (the row),
 * \`start\` (its first element), \`lid\` and \`STRIDE\` (this thread's first column and the step
 * between its columns), \`valid\`, and \`rowSum\` and \`rowMax\`, which every thread of a group
 * must call.
 */
export function rowPrelude(mode: RowMode): string {
  return mode === "thread" ? THREAD_PRELUDE : `${GROUP_REDUCE_WGSL}\n${GROUP_ENTRY}`;
}

const softmaxKernel = kernelCache((mode: RowMode) =>
  defineKernel({
    label: `softmax ${mode}`,
    workgroupSize: ROW_WG,
    buffers: [ro("x"), rw("y")],
    params: [["rows", "u32"], ["cols", "u32"], ["causalQueries", "u32"]],
    body: `${rowPrelude(mode)}
  // Causal row r attends to key columns c <= (r mod T) + (cols - T); none when that is negative.
  var visible = params.cols;
  if (params.causalQueries > 0u) {
    let last = i32(r % params.causalQueries) + i32(params.cols) - i32(params.causalQueries);
    visible = u32(clamp(last + 1, 0, i32(params.cols)));
  }

  var localMax = negInf();
  for (var c = lid; c < visible; c += STRIDE) { localMax = max(localMax, x[start + c]); }
  let rowMaximum = rowMax(lid, localMax);

  var localSum = 0.0f;
  for (var c = lid; c < visible; c += STRIDE) { localSum += exp(x[start + c] - rowMaximum); }
  let total = rowSum(lid, localSum);

  if (!valid) { return; }
  for (var c = lid; c < params.cols; c += STRIDE) {
    y[start + c] = select(0.0f, exp(x[start + c] - rowMaximum) / total, c < visible);
  }
}`,
  })
);

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
    const mode = rowMode(cols);
    ctx.dispatch(softmaxKernel(mode), [xs, y], [rows, cols, causalQueries], rowGrid(mode, rows));
  }
  return y;
}

const softmaxBackwardKernel = kernelCache((mode: RowMode) =>
  defineKernel({
    label: `softmaxBackward ${mode}`,
    workgroupSize: ROW_WG,
    buffers: [ro("y"), ro("dy"), rw("dx")],
    params: [["rows", "u32"], ["cols", "u32"]],
    body: `${rowPrelude(mode)}
  var localDot = 0.0f;
  for (var c = lid; c < params.cols; c += STRIDE) { localDot += dy[start + c] * y[start + c]; }
  let dotProduct = rowSum(lid, localDot);

  if (!valid) { return; }
  for (var c = lid; c < params.cols; c += STRIDE) {
    dx[start + c] = y[start + c] * (dy[start + c] - dotProduct);
  }
}`,
  })
);

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
    const mode = rowMode(cols);
    ctx.dispatch(softmaxBackwardKernel(mode), [ys, dys, dx], [rows, cols], rowGrid(mode, rows));
  }
  return dx;
}

/**
 * Per-row log-sum-exp (max subtracted) and loss. `rowLoss` contains pairs (loss, counted): (0, 0) for
 * an ignored row. A target outside [0, cols) that is not ignoreIndex cannot raise an error on the
 * GPU, so its row counts with loss NaN, which makes the mean loss NaN.
 */
const crossEntropyRowsKernel = kernelCache((mode: RowMode) =>
  defineKernel({
    label: `crossEntropy rows ${mode}`,
    workgroupSize: ROW_WG,
    buffers: [ro("logits"), ro("targets", "i32"), rw("lse"), rw("rowLoss")],
    params: [["rows", "u32"], ["cols", "u32"], ["ignoreIndex", "i32"]],
    body: `${rowPrelude(mode)}
  var localMax = negInf();
  for (var c = lid; c < params.cols; c += STRIDE) { localMax = max(localMax, logits[start + c]); }
  let rowMaximum = rowMax(lid, localMax);

  var localSum = 0.0f;
  for (var c = lid; c < params.cols; c += STRIDE) { localSum += exp(logits[start + c] - rowMaximum); }
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
  })
);

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
      crossEntropyRowsKernel(rowMode(cols)),
      [xs, ts, lse, rowLoss],
      [rows, cols, ignoreIndex],
      rowGrid(rowMode(cols), rows),
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
