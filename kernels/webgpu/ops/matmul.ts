/**
 * Batched matrix product `C[b] = op(A[b]) · op(B[b])`.
 *
 * Each thread accumulates a block of C in registers and reads both operands straight from storage
 * in the layout they are stored in. When k is a multiple of 4, the vec4 kernel reads four floats
 * per load. It reads along k an operand stored k-contiguous (A as [m, k], B as [n, k]), and along
 * its rows an operand stored [k, rows] (A transposed, B not). Both forms load one vec4 per block
 * row and step of 4 along k. An operand stored [k, rows] with rows not a multiple of 4 is first
 * transposed into the k-contiguous layout. When k is not a multiple of 4, the scalar kernel reads
 * one float per load through strides, in either layout.
 *
 * The kernels are tuned for Mesa's llvmpipe adapter, measured on a 2-core machine in December 2026.
 * llvmpipe runs 8 invocations as SIMD lanes, and in its source (lp_bld_nir_soa.c, Mesa 21.3) each
 * storage load or store is a loop over the lanes, so memory instructions cost far more than math.
 * - Reading the stored layout replaced a transpose before every transA or non-transB product.
 *   Those transposes cost more than the tiny-GPT step's backward products themselves.
 * - A 16×16 block per thread halves the loads per multiply-add of an 8×8 block. Interleaved steps
 *   of the tiny GPT ran 13–25% faster than with 8×8 blocks, and 16×32 or 32×16 were no faster.
 *   With 16 threads per workgroup, the step's smallest products (128×128) still fill 4 workgroups.
 * - vec4 stores, when n is a multiple of 4, need a quarter of the store instructions.
 * - There is no workgroup-memory tiling: llvmpipe serves shared memory lane by lane too, and a tiled
 *   kernel with barriers ran at 0.8–2.7 GFLOP/s against 6–14 GFLOP/s for register blocking.
 * NOTE: on a hardware GPU, 256 accumulators per thread would likely spill to memory, so such
 * adapters would want smaller blocks and larger workgroups. No hardware adapter was measured.
 *
 * Every output sums over k in index order: four products at a time in the vec4 kernel (the same
 * bits in every layout) and one at a time in the scalar kernel.
 */

import type { MatmulSpec, Storage } from "../../backend.ts";
import { checkCount } from "./checks.ts";
import {
  defineKernel,
  type Grid,
  kernelCache,
  type KernelContext,
  MAX_GROUPS_PER_DIM,
  ro,
  rw,
} from "./kernel.ts";
import { transpose } from "./layout.ts";

/** Rows and columns of C per thread in the vec4 kernel. */
const VEC_BLOCK = 16;
/** Threads per workgroup of the vec4 kernel. */
const VEC_WG = 16;
/** Rows and columns of C per thread in the scalar kernel. */
const SCALAR_BLOCK = 8;
/** Threads per workgroup of the scalar kernel. */
const SCALAR_WG = 64;

const COMPONENTS = ["x", "y", "z", "w"];

/**
 * Operand layout read by the vec4 kernel: "k" for one stored [rows, k] (vec4 along k), "rows" for
 * one stored [k, rows] (vec4 along its rows). Rows are C's rows for A and C's columns for B.
 */
type VecLayout = "k" | "rows";

/**
 * Builds the WGSL for one operand of the vec4 kernel: the loads of one step of 4 along k, and the
 * vec4 of block row `i` over those 4 k values.
 */
function operandWgsl(
  name: "a" | "b",
  layout: VecLayout,
): { loads: string[]; row: (i: number) => string } {
  const origin = name === "a" ? "row" : "col";
  const last = name === "a" ? "params.m" : "params.n";
  const loads: string[] = [];
  if (layout === "k") {
    // Block row i over k..k+3 is one vec4. Rows past the edge load a valid row and are not stored.
    for (let i = 0; i < VEC_BLOCK; i++) {
      loads.push(
        `let ${name}${i} = ${name}[${name}Base + min(${origin} + ${i}u, ${last} - 1u) * kw + kk];`,
      );
    }
    return { loads, row: (i) => `${name}${i}` };
  }
  // Row k + q contains the block's rows as vec4s. A vec4 past the edge loads a valid one.
  const width = `${name}Width`;
  for (let q = 0; q < 4; q++) {
    for (let h = 0; h < VEC_BLOCK / 4; h++) {
      loads.push(
        `let ${name}${q}_${h} = ${name}[${name}Base + (4u * kk + ${q}u) * ${width} + ` +
          `min(${origin} / 4u + ${h}u, ${width} - 1u)];`,
      );
    }
  }
  const row = (i: number) => {
    const parts = [0, 1, 2, 3].map((q) => `${name}${q}_${i >> 2}.${COMPONENTS[i & 3]}`);
    return `vec4<f32>(${parts.join(", ")})`;
  };
  return { loads, row };
}

/** Builds the WGSL stores of the accumulators `acc{r}_{c}`: scalar, or vec4 along a row. */
function storeWgsl(vectorStore: boolean): string[] {
  const stores: string[] = [];
  const step = vectorStore ? 4 : 1;
  for (let r = 0; r < VEC_BLOCK; r++) {
    for (let c = 0; c < VEC_BLOCK; c += step) {
      const index = `cBase + (row + ${r}u) * params.n + col + ${c}u`;
      const value = vectorStore
        ? `vec4<f32>(${[0, 1, 2, 3].map((d) => `acc${r}_${c + d}`).join(", ")})`
        : `acc${r}_${c}`;
      // With n % 4 = 0 a vec4 of a row lies wholly inside C or wholly past its edge.
      stores.push(
        `if (row + ${r}u < params.m && col + ${c}u < params.n) { ` +
          `c[${vectorStore ? `(${index}) / 4u` : index}] = ${value}; }`,
      );
    }
  }
  return stores;
}

/** WGSL mapping thread t to the block at (row, col), col fastest, and the batch to the grid's z. */
const BLOCK_ORIGIN_WGSL = (block: number) => `
  let blocksN = (params.n + ${block - 1}u) / ${block}u;
  let t = gid.x;
  let row = (t / blocksN) * ${block}u;
  let col = (t % blocksN) * ${block}u;
  if (row >= params.m) { return; }
  let batch = gid.z;`;

const vecKernel = kernelCache((key: `${VecLayout} ${VecLayout} ${boolean}`) => {
  const [aLayout, bLayout, storeFlag] = key.split(" ");
  const vectorStore = storeFlag === "true";
  const a = operandWgsl("a", aLayout as VecLayout);
  const b = operandWgsl("b", bLayout as VecLayout);
  const accumulators: string[] = [];
  const updates: string[] = [];
  for (let r = 0; r < VEC_BLOCK; r++) {
    for (let c = 0; c < VEC_BLOCK; c++) {
      accumulators.push(`var acc${r}_${c} = 0.0f;`);
      updates.push(`acc${r}_${c} += dot(${a.row(r)}, ${b.row(c)});`);
    }
  }
  return defineKernel({
    label: `matmul vec4 a:${aLayout} b:${bLayout}${vectorStore ? " vec4 store" : ""}`,
    workgroupSize: VEC_WG,
    buffers: [
      ro("a", "vec4<f32>"),
      ro("b", "vec4<f32>"),
      rw("c", vectorStore ? "vec4<f32>" : "f32"),
    ],
    params: [
      ["m", "u32"],
      ["n", "u32"],
      ["k", "u32"],
      ["aBatchStride", "u32"],
      ["bBatchStride", "u32"],
    ],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${BLOCK_ORIGIN_WGSL(VEC_BLOCK)}
  let kw = params.k / 4u;
  let aWidth = params.m / 4u;
  let bWidth = params.n / 4u;
  let aBase = batch * params.aBatchStride / 4u;
  let bBase = batch * params.bBatchStride / 4u;

  ${accumulators.join("\n  ")}
  for (var kk = 0u; kk < kw; kk++) {
    ${[...a.loads, ...b.loads, ...updates].join("\n    ")}
  }
  let cBase = batch * params.m * params.n;
  ${storeWgsl(vectorStore).join("\n  ")}
}`,
  });
});

/** Scalar kernel: element (i, k) of an operand is at i·rowStride + k·kStride, in either layout. */
const scalarKernel = (() => {
  const lines: string[] = [];
  for (let r = 0; r < SCALAR_BLOCK; r++) {
    lines.push(
      `let a${r} = a[aBase + min(row + ${r}u, last.x) * params.aRowStride + kk * params.aKStride];`,
    );
  }
  for (let c = 0; c < SCALAR_BLOCK; c++) {
    lines.push(
      `let b${c} = b[bBase + min(col + ${c}u, last.y) * params.bRowStride + kk * params.bKStride];`,
    );
  }
  for (let r = 0; r < SCALAR_BLOCK; r++) {
    for (let c = 0; c < SCALAR_BLOCK; c++) {
      lines.push(`acc[${r * SCALAR_BLOCK + c}] += a${r} * b${c};`);
    }
  }
  return defineKernel({
    label: "matmul scalar",
    workgroupSize: SCALAR_WG,
    buffers: [ro("a"), ro("b"), rw("c")],
    params: [
      ["m", "u32"],
      ["n", "u32"],
      ["k", "u32"],
      ["aBatchStride", "u32"],
      ["bBatchStride", "u32"],
      ["aRowStride", "u32"],
      ["aKStride", "u32"],
      ["bRowStride", "u32"],
      ["bKStride", "u32"],
    ],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  ${BLOCK_ORIGIN_WGSL(SCALAR_BLOCK)}
  let aBase = batch * params.aBatchStride;
  let bBase = batch * params.bBatchStride;
  // Rows past the edge load a valid row and are never stored.
  let last = vec2<u32>(params.m - 1u, params.n - 1u);

  var acc: array<f32, ${SCALAR_BLOCK * SCALAR_BLOCK}>;
  for (var kk = 0u; kk < params.k; kk++) {
    ${lines.join("\n    ")}
  }

  let cBase = batch * params.m * params.n;
  for (var r = 0u; r < ${SCALAR_BLOCK}u; r++) {
    for (var q = 0u; q < ${SCALAR_BLOCK}u; q++) {
      if (row + r < params.m && col + q < params.n) {
        c[cBase + (row + r) * params.n + col + q] = acc[r * ${SCALAR_BLOCK}u + q];
      }
    }
  }
}`,
  });
})();

/** Returns the grid of one thread per block × block tile of each batch entry's C. */
function blockGrid(op: string, spec: MatmulSpec, block: number, workgroupSize: number): Grid {
  const { batch, m, n } = spec;
  const threads = Math.ceil(m / block) * Math.ceil(n / block);
  const groups = Math.ceil(threads / workgroupSize);
  if (groups > MAX_GROUPS_PER_DIM || batch > MAX_GROUPS_PER_DIM) {
    throw new Error(
      `${op}: batch ${batch}, m ${m}, n ${n} needs a grid of ${groups}×1×${batch} workgroups, ` +
        `over the limit of ${MAX_GROUPS_PER_DIM} per dimension`,
    );
  }
  return [groups, 1, batch];
}

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
  const batchStrides = [aBatched ? m * k : 0, bBatched ? k * n : 0];

  if (k % 4 !== 0) {
    const aStrides = transA ? [1, m] : [k, 1];
    const bStrides = transB ? [k, 1] : [1, n];
    ctx.dispatch(
      scalarKernel,
      [a, b, c],
      [m, n, k, ...batchStrides, ...aStrides, ...bStrides],
      blockGrid(op, spec, SCALAR_BLOCK, SCALAR_WG),
    );
    return c;
  }

  // An operand stored [k, rows] is read along its rows when they come in whole vec4s.
  const aRead = transA && m % 4 !== 0 ? transpose(ctx, a, [aBatch, k, m], 1, 2) : a;
  const bRead = !transB && n % 4 !== 0 ? transpose(ctx, b, [bBatch, k, n], 1, 2) : b;
  const aLayout: VecLayout = transA && aRead === a ? "rows" : "k";
  const bLayout: VecLayout = !transB && bRead === b ? "rows" : "k";
  ctx.dispatch(
    vecKernel(`${aLayout} ${bLayout} ${n % 4 === 0}`),
    [aRead, bRead, c],
    [m, n, k, ...batchStrides],
    blockGrid(op, spec, VEC_BLOCK, VEC_WG),
  );
  if (aRead !== a) ctx.release(aRead);
  if (bRead !== b) ctx.release(bRead);
  return c;
}
