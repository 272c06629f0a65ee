/**
 * Indexing ops: row gather by i32 ids (embedding lookup), its gradient scatterAdd, and rotary
 * position embedding.
 *
 * NOTE: ids and targets live on the GPU, so an id outside [0, vocab) cannot raise an error the way
 * the CPU backend does. gather writes NaN for such a row and scatterAdd skips it.
 */

import type { Storage } from "../../backend.ts";
import { checkCount } from "./checks.ts";
import { defineKernel, groupGrid, type KernelContext, ro, rw, threadGrid } from "./kernel.ts";

const WG = 256;
const SCATTER_WG = 64;

const gatherKernel = defineKernel({
  label: "gather",
  workgroupSize: WG,
  buffers: [ro("table"), ro("ids", "i32"), rw("out")],
  params: [["n", "u32"], ["vocab", "u32"], ["dim", "u32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatThread(gid, nwg);
  if (t >= params.n * params.dim) { return; }
  let i = t / params.dim;
  let d = t % params.dim;
  let id = ids[i];
  if (id < 0 || id >= i32(params.vocab)) {
    out[t] = bitcast<f32>(0x7fc00000u);
    return;
  }
  out[t] = table[u32(id) * params.dim + d];
}`,
});

function checkIndexSizes(op: string, n: number, vocab: number, dim: number): void {
  checkCount(op, "n", n);
  checkCount(op, "vocab", vocab);
  checkCount(op, "dim", dim);
}

export function gather(
  ctx: KernelContext,
  table: Storage,
  ids: Storage,
  n: number,
  vocab: number,
  dim: number,
): Storage {
  const op = "gather";
  checkIndexSizes(op, n, vocab, dim);
  const tables = ctx.input(op, "table", table, vocab * dim, "f32");
  const idss = ctx.input(op, "ids", ids, n, "i32");

  const out = ctx.output(n * dim, "f32");
  if (n * dim > 0) {
    ctx.dispatch(gatherKernel, [tables, idss, out], [n, vocab, dim], threadGrid(n * dim, WG));
  }
  return out;
}

/**
 * One workgroup per vocabulary row v. It scans ids in chunks of WG, compacts the positions equal
 * to v in increasing order, and each thread adds those rows of dy to its columns of out[v]. So
 * every sum runs over positions in order, without atomics, and the work is vocab·n comparisons
 * plus n·dim additions.
 */
const scatterAddKernel = defineKernel({
  label: "scatterAdd",
  workgroupSize: SCATTER_WG,
  buffers: [ro("dy"), ro("ids", "i32"), rw("out")],
  params: [["n", "u32"], ["vocab", "u32"], ["dim", "u32"]],
  body: `
var<workgroup> isMatch: array<u32, WG>;
var<workgroup> positions: array<u32, WG>;
var<workgroup> matchCount: u32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = flatGroup(wid, nwg);
  let valid = row < params.vocab;
  let v = i32(min(row, params.vocab - 1u));
  let rowStart = u32(v) * params.dim;
  if (valid) {
    for (var d = lid; d < params.dim; d += WG) { out[rowStart + d] = 0.0f; }
  }

  for (var chunk = 0u; chunk < params.n; chunk += WG) {
    let i = chunk + lid;
    isMatch[lid] = select(0u, 1u, i < params.n && ids[min(i, params.n - 1u)] == v);
    workgroupBarrier();
    if (lid == 0u) {
      var count = 0u;
      for (var t = 0u; t < WG; t++) {
        if (isMatch[t] == 1u) {
          positions[count] = chunk + t;
          count++;
        }
      }
      matchCount = count;
    }
    workgroupBarrier();
    let count = matchCount;
    if (valid && count > 0u) {
      for (var d = lid; d < params.dim; d += WG) {
        var acc = out[rowStart + d];
        for (var m = 0u; m < count; m++) { acc += dy[positions[m] * params.dim + d]; }
        out[rowStart + d] = acc;
      }
    }
    // The next chunk overwrites isMatch and positions.
    workgroupBarrier();
  }
}`,
});

export function scatterAdd(
  ctx: KernelContext,
  dy: Storage,
  ids: Storage,
  n: number,
  vocab: number,
  dim: number,
): Storage {
  const op = "scatterAdd";
  checkIndexSizes(op, n, vocab, dim);
  const dys = ctx.input(op, "dy", dy, n * dim, "f32");
  const idss = ctx.input(op, "ids", ids, n, "i32");

  const out = ctx.output(vocab * dim, "f32");
  if (vocab * dim > 0) {
    ctx.dispatch(scatterAddKernel, [dys, idss, out], [n, vocab, dim], groupGrid(vocab));
  }
  return out;
}

/** y1 = x1·cos θ − x2·sin θ and y2 = x1·sin θ + x2·cos θ for each pair (x[i], x[i + dim/2]). */
const ropeKernel = defineKernel({
  label: "rope",
  workgroupSize: WG,
  buffers: [ro("x"), ro("cosTable"), ro("sinTable"), rw("y")],
  params: [["pairs", "u32"], ["seqLen", "u32"], ["half", "u32"], ["sign", "f32"]],
  body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = flatThread(gid, nwg);
  if (t >= params.pairs) { return; }
  let i = t % params.half;
  let position = t / params.half;
  let s = position % params.seqLen;
  let start = position * 2u * params.half;
  let c = cosTable[s * params.half + i];
  let sn = params.sign * sinTable[s * params.half + i];
  let x1 = x[start + i];
  let x2 = x[start + params.half + i];
  y[start + i] = x1 * c - x2 * sn;
  y[start + params.half + i] = x1 * sn + x2 * c;
}`,
});

export function rope(
  ctx: KernelContext,
  x: Storage,
  cos: Storage,
  sin: Storage,
  outer: number,
  seqLen: number,
  dim: number,
  inverse: boolean,
): Storage {
  const op = "rope";
  checkCount(op, "outer", outer);
  checkCount(op, "seqLen", seqLen);
  checkCount(op, "dim", dim);
  if (dim % 2 !== 0) {
    throw new Error(`${op}: dim is ${dim} but must be even to pair i with i + dim/2`);
  }
  const half = dim / 2;
  const xs = ctx.input(op, "x", x, outer * seqLen * dim, "f32");
  const cosTable = ctx.input(op, "cos", cos, seqLen * half, "f32");
  const sinTable = ctx.input(op, "sin", sin, seqLen * half, "f32");

  const y = ctx.output(xs.size, "f32");
  const pairs = outer * seqLen * half;
  if (pairs > 0) {
    ctx.dispatch(
      ropeKernel,
      [xs, cosTable, sinTable, y],
      [pairs, seqLen, half, inverse ? -1 : 1],
      threadGrid(pairs, WG),
    );
  }
  return y;
}
