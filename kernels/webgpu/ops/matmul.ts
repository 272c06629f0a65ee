/**
 * Batched matrix product `C[b] = op(A[b]) · op(B[b])`.
 *
 * The kernel computes C = A · Bᵀ with A stored [m, k] and B stored [n, k], so both operands are
 * read along k, the contiguous axis. Other layouts are first transposed into that one (a copy of
 * O(size) against the product's O(m·n·k) work). Each thread accumulates an 8×8 block of C in
 * registers and reads its operands straight from storage, four floats per load when k is a
 * multiple of 4. There is no workgroup-memory tiling: on Mesa's llvmpipe adapter a shared-memory
 * tiled kernel with barriers ran at 0.8–2.7 GFLOP/s and this one at 6–14 GFLOP/s for the shapes
 * of the quickstart model and 512³ (2-core machine, December 2026; deno task bench measures the
 * matmul again). Every output sums over k in index order, four products at a time.
 */

import type { MatmulSpec, Storage } from "../../backend.ts";
import { checkCount } from "./checks.ts";
import {
  defineKernel,
  kernelCache,
  type KernelContext,
  MAX_GROUPS_PER_DIM,
  ro,
  rw,
} from "./kernel.ts";
import { transpose } from "./layout.ts";

/** Rows and columns of C per thread. */
const BLOCK = 8;
const WG = 64;

const matmulKernel = kernelCache((vectorized: boolean) => {
  const width = vectorized ? 4 : 1;
  const type = vectorized ? "vec4<f32>" : "f32";
  const product = (x: string, y: string) => (vectorized ? `dot(${x}, ${y})` : `${x} * ${y}`);

  const lines: string[] = [];
  for (let r = 0; r < BLOCK; r++) {
    lines.push(`let a${r} = a[aBase + min(row + ${r}u, last.x) * kw + kk];`);
  }
  for (let c = 0; c < BLOCK; c++) {
    lines.push(`let b${c} = b[bBase + min(col + ${c}u, last.y) * kw + kk];`);
  }
  for (let r = 0; r < BLOCK; r++) {
    for (let c = 0; c < BLOCK; c++) {
      lines.push(`acc[${r * BLOCK + c}] += ${product(`a${r}`, `b${c}`)};`);
    }
  }

  return defineKernel({
    label: `matmul ${vectorized ? "vec4" : "scalar"}`,
    workgroupSize: WG,
    buffers: [ro("a", type), ro("b", type), rw("c")],
    params: [["m", "u32"], ["n", "u32"], ["k", "u32"], ["aBatchStride", "u32"], [
      "bBatchStride",
      "u32",
    ]],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let blocksN = (params.n + ${BLOCK - 1}u) / ${BLOCK}u;
  let t = gid.x;
  let row = (t / blocksN) * ${BLOCK}u;
  let col = (t % blocksN) * ${BLOCK}u;
  if (row >= params.m) { return; }
  let batch = gid.z;
  let kw = params.k / ${width}u;
  let aBase = batch * params.aBatchStride / ${width}u;
  let bBase = batch * params.bBatchStride / ${width}u;
  // Rows past the edge load a valid row and are never stored.
  let last = vec2<u32>(params.m - 1u, params.n - 1u);

  var acc: array<f32, ${BLOCK * BLOCK}>;
  for (var kk = 0u; kk < kw; kk++) {
    ${lines.join("\n    ")}
  }

  let cBase = batch * params.m * params.n;
  for (var r = 0u; r < ${BLOCK}u; r++) {
    for (var q = 0u; q < ${BLOCK}u; q++) {
      if (row + r < params.m && col + q < params.n) {
        c[cBase + (row + r) * params.n + col + q] = acc[r * ${BLOCK}u + q];
      }
    }
  }
}`,
  });
});

export function matmul(ctx: KernelContext, a: Storage, b: Storage, spec: MatmulSpec): Storage {
  const op = "matmul";
  const { batch, m, n, k, transA, transB, aBatched, bBatched } = spec;
  for (const [name, value] of Object.entries({ batch, m, n, k })) checkCount(op, name, value);
  const aBatch = aBatched ? batch : 1;
  const bBatch = bBatched ? batch : 1;
  ctx.input(
    op,
    `a (${aBatched ? `${batch}×` : ""}${transA ? `${k}×${m}` : `${m}×${k}`})`,
    a,
    aBatch * m * k,
    "f32",
  );
  ctx.input(
    op,
    `b (${bBatched ? `${batch}×` : ""}${transB ? `${n}×${k}` : `${k}×${n}`})`,
    b,
    bBatch * k * n,
    "f32",
  );

  const c = ctx.output(batch * m * n, "f32");
  if (batch * m * n === 0) return c;
  // With k = 0 the loop over k never runs and every output is the empty sum 0.

  // Bring both operands into the k-contiguous layout: A as [m, k], B as [n, k].
  const aRows = transA ? transpose(ctx, a, [aBatch, k, m], 1, 2) : a;
  const bRows = transB ? b : transpose(ctx, b, [bBatch, k, n], 1, 2);

  const threads = Math.ceil(m / BLOCK) * Math.ceil(n / BLOCK);
  const groups = Math.ceil(threads / WG);
  if (groups > MAX_GROUPS_PER_DIM || batch > MAX_GROUPS_PER_DIM) {
    throw new Error(
      `${op}: batch ${batch}, m ${m}, n ${n} needs a grid of ${groups}×1×${batch} workgroups, ` +
        `over the limit of ${MAX_GROUPS_PER_DIM} per dimension`,
    );
  }
  ctx.dispatch(
    matmulKernel(k % 4 === 0),
    [aRows, bRows, c],
    [m, n, k, aBatched ? m * k : 0, bBatched ? k * n : 0],
    [groups, 1, batch],
  );

  if (aRows !== a) ctx.release(aRows);
  if (bRows !== b) ctx.release(bRows);
  return c;
}
