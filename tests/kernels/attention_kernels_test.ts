/**
 * Fused attention kernels: the CPU op against the unfused tensor-op reference, and the WebGPU
 * kernels against the float64 CPU op, forward, backward and probabilities, at odd sequence
 * lengths with every option. Without a WebGPU adapter the GPU tests are skipped with the reason.
 *
 * Run: `npx deno test -A tests/kernels/attention_kernels_test.ts`.
 */

import assert from "node:assert/strict";
import type { Backend, HostArray } from "../../kernels/backend.ts";
import { BackendUnavailableError } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../../kernels/webgpu/backend.ts";
import {
  attention,
  attentionKeepEnds,
  attentionProbs,
  backward,
  type FusedAttentionOptions,
  Rng,
  Tensor,
  withScopeAsync,
} from "../../tensor/mod.ts";
import { unfusedAttention, type UnfusedAttentionOptions } from "../../layers/attention/unfused.ts";

const FORWARD_TOL = 1e-5;
const GRAD_TOL = 1e-4;

let gpu: WebGpuBackend | null = null;
try {
  gpu = await createWebGpuBackend({ poison: true });
} catch (error) {
  if (!(error instanceof BackendUnavailableError)) throw error;
  console.warn(`webgpu attention tests skipped: ${error.message}`);
}
const cpu = createCpuBackend({ precision: "f64", poison: true });
const gpuOptions = { sanitizeResources: false, sanitizeOps: false, ignore: gpu === null };

/** One attention configuration; host arrays are drawn per case so both backends see the same. */
interface Case {
  name: string;
  batch: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  valueDim: number;
  window?: number;
  windows?: number[];
  initialKeys?: number;
  bias?: "keys" | "full";
  alibi?: boolean;
  /** Hide these key positions in batch entry 0 (a row whose keys are all hidden is zero). */
  hiddenKeys?: number[];
  /** Keep the top w keys per query by a random per-key score (dynamic mask attention). */
  keep?: number;
  sink?: "head" | "row";
}

const CASES: Case[] = [
  { name: "plain", batch: 2, heads: 2, kvHeads: 2, headDim: 4, valueDim: 4 },
  { name: "grouped query", batch: 1, heads: 4, kvHeads: 2, headDim: 3, valueDim: 5 },
  { name: "multi query", batch: 2, heads: 3, kvHeads: 1, headDim: 4, valueDim: 2 },
  { name: "key bias", batch: 2, heads: 4, kvHeads: 2, headDim: 4, valueDim: 4, bias: "keys" },
  { name: "full bias", batch: 1, heads: 2, kvHeads: 2, headDim: 4, valueDim: 3, bias: "full" },
  { name: "window", batch: 2, heads: 2, kvHeads: 1, headDim: 4, valueDim: 4, window: 3 },
  {
    name: "head windows with initial keys",
    batch: 1,
    heads: 3,
    kvHeads: 3,
    headDim: 2,
    valueDim: 2,
    windows: [1, 4, 0],
    initialKeys: 2,
  },
  { name: "alibi", batch: 1, heads: 2, kvHeads: 2, headDim: 4, valueDim: 4, alibi: true },
  {
    name: "key mask",
    batch: 2,
    heads: 2,
    kvHeads: 2,
    headDim: 3,
    valueDim: 3,
    hiddenKeys: [0, 1, 5],
  },
  { name: "head sink", batch: 2, heads: 2, kvHeads: 1, headDim: 4, valueDim: 4, sink: "head" },
  {
    name: "row sink with window",
    batch: 1,
    heads: 2,
    kvHeads: 2,
    headDim: 4,
    valueDim: 4,
    sink: "row",
    window: 2,
  },
  {
    name: "top-w keys with key bias",
    batch: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 4,
    valueDim: 4,
    keep: 3,
    bias: "keys",
  },
];

const SEQ_LENS = [1, 7, 13, 33];

interface HostCase {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  bias: Float64Array | null;
  biasShape: number[];
  sink: Float64Array | null;
  sinkShape: number[];
  alibi: number[] | null;
  keyMask: Float64Array | null;
  keyScores: Float64Array | null;
  projection: Float64Array;
}

function drawCase(c: Case, seqLen: number, seed: number): HostCase {
  const rng = new Rng(seed);
  const { batch: b, heads: h, kvHeads: hk, headDim: dk, valueDim: dv } = c;
  const keyMask = c.hiddenKeys ? new Float64Array(b * seqLen).fill(1) : null;
  for (const j of c.hiddenKeys ?? []) if (j < seqLen) keyMask![j] = 0;
  const biasShape = c.bias === "keys" ? [b, hk, seqLen] : [b, h, seqLen, seqLen];
  const sinkShape = c.sink === "head" ? [h] : [b, h, seqLen];
  const size = (shape: number[]) => shape.reduce((x, y) => x * y, 1);
  const round = (a: Float64Array) => Float64Array.from(Float32Array.from(a));
  return {
    q: round(rng.normalArray(b * h * seqLen * dk)),
    k: round(rng.normalArray(b * hk * seqLen * dk)),
    v: round(rng.normalArray(b * hk * seqLen * dv)),
    bias: c.bias ? round(rng.normalArray(size(biasShape))) : null,
    biasShape,
    sink: c.sink ? round(rng.normalArray(size(sinkShape))) : null,
    sinkShape,
    alibi: c.alibi ? Array.from({ length: h }, (_, i) => 2 ** -(i + 1)) : null,
    keyMask,
    // Integers, so ties occur and the tie rule is exercised.
    keyScores: c.keep ? rng.normalArray(b * hk * seqLen).map((x) => Math.round(x)) : null,
    projection: round(rng.normalArray(b * h * seqLen * dv)),
  };
}

/** The brute-force keep ends of dynamic mask attention, from the definition. */
function keepEndsByDefinition(scores: Float64Array, rows: number, seqLen: number, keep: number) {
  const ends = new Int32Array(rows * seqLen);
  for (let r = 0; r < rows; r++) {
    const s = (j: number) => scores[r * seqLen + j];
    for (let j = 0; j < seqLen; j++) {
      let end = seqLen;
      for (let i = j; i < seqLen; i++) {
        // Keys a ≤ i ranked above j: higher score, or equal score and later position.
        let above = 0;
        for (let a = 0; a <= i; a++) if (s(a) > s(j) || (s(a) === s(j) && a > j)) above++;
        if (above >= keep) {
          end = i;
          break;
        }
      }
      ends[r * seqLen + j] = end;
    }
  }
  return ends;
}

interface Run {
  output: HostArray;
  grads: HostArray[];
  probs: HostArray;
}

/** Runs the fused op (or the unfused reference) on a backend and returns output and gradients. */
function runCase(
  backend: Backend,
  c: Case,
  host: HostCase,
  seqLen: number,
  fused: boolean,
): Promise<Run> {
  return withScopeAsync(async () => {
    const { batch: b, heads: h, kvHeads: hk, headDim: dk, valueDim: dv } = c;
    const leaf = (data: Float64Array, shape: number[]) => {
      const t = Tensor.fromArray(backend, data, shape, "f32");
      t.requiresGrad = true;
      return t;
    };
    const q = leaf(host.q, [b, h, seqLen, dk]);
    const k = leaf(host.k, [b, hk, seqLen, dk]);
    const v = leaf(host.v, [b, hk, seqLen, dv]);
    const bias = host.bias ? leaf(host.bias, host.biasShape) : undefined;
    const sink = host.sink ? leaf(host.sink, host.sinkShape) : undefined;

    let keyEnds: Int32Array | undefined;
    if (host.keyScores) {
      const scores = Tensor.fromArray(backend, host.keyScores, [b, hk, seqLen], "f32");
      keyEnds = (await attentionKeepEnds(scores, c.keep!).data()) as Int32Array;
      const expected = keepEndsByDefinition(host.keyScores, b * hk, seqLen, c.keep!);
      assert.deepEqual(Array.from(keyEnds), Array.from(expected), `${c.name}: keep ends`);
    }

    const shared = { window: c.window, initialKeys: c.initialKeys, bias, sink };
    let output: Tensor;
    let probs: Tensor;
    if (fused) {
      const options: FusedAttentionOptions = {
        ...shared,
        windows: c.windows ? Tensor.fromArray(backend, Int32Array.from(c.windows), [h]) : undefined,
        alibiSlopes: host.alibi ? Tensor.fromArray(backend, host.alibi, [h], "f32") : undefined,
        keyMask: host.keyMask ? Tensor.fromArray(backend, host.keyMask, [b, seqLen]) : undefined,
        keyEnds: keyEnds ? Tensor.fromArray(backend, keyEnds, [b, hk, seqLen]) : undefined,
      };
      output = attention(q, k, v, options);
      probs = attentionProbs(q, k, options);
    } else {
      const options: UnfusedAttentionOptions = {
        ...shared,
        windows: c.windows,
        alibiSlopes: host.alibi ?? undefined,
        keyMask: host.keyMask ?? undefined,
        keyEnds,
      };
      ({ output, probs } = unfusedAttention(q, k, v, options));
    }

    const seed = Tensor.fromArray(backend, host.projection, output.shape, "f32");
    backward(output, seed);
    const leaves = [q, k, v, ...(bias ? [bias] : []), ...(sink ? [sink] : [])];
    const grads: HostArray[] = [];
    for (const t of leaves) {
      assert.ok(t.grad !== null, `${c.name}: an input received no gradient`);
      grads.push(await t.grad.data());
      t.grad.dispose();
    }
    return { output: await output.data(), grads, probs: await probs.data() };
  });
}

function assertClose(name: string, actual: HostArray, expected: HostArray, tol: number): void {
  assert.equal(actual.length, expected.length, `${name}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const ok = Number.isFinite(a) && Math.abs(a - e) <= tol * Math.max(1, Math.abs(e));
    assert.ok(ok, `${name}: element ${i} is ${a}, expected ${e}`);
  }
}

const GRAD_NAMES = ["dq", "dk", "dv", "dbias or dsink", "dsink"];

function compareRuns(label: string, actual: Run, expected: Run): void {
  assertClose(`${label}: output`, actual.output, expected.output, FORWARD_TOL);
  assertClose(`${label}: probs`, actual.probs, expected.probs, FORWARD_TOL);
  assert.equal(actual.grads.length, expected.grads.length, `${label}: gradient count`);
  actual.grads.forEach((g, i) => {
    assertClose(`${label}: ${GRAD_NAMES[i]}`, g, expected.grads[i], GRAD_TOL);
  });
}

let seed = 100;
for (const c of CASES) {
  Deno.test(`attention fused matches unfused cpu ${c.name}`, async () => {
    for (const seqLen of SEQ_LENS) {
      const host = drawCase(c, seqLen, seed++);
      const fused = await runCase(cpu, c, host, seqLen, true);
      const reference = await runCase(cpu, c, host, seqLen, false);
      compareRuns(`${c.name} T=${seqLen}`, fused, reference);
    }
  });

  Deno.test({
    name: `attention webgpu matches cpu ${c.name}`,
    ...gpuOptions,
    fn: async () => {
      for (const seqLen of SEQ_LENS) {
        const host = drawCase(c, seqLen, seed++);
        const expected = await runCase(cpu, c, host, seqLen, true);
        const fused = await runCase(gpu!, c, host, seqLen, true);
        compareRuns(`${c.name} T=${seqLen} webgpu`, fused, expected);
        const unfused = await runCase(gpu!, c, host, seqLen, false);
        compareRuns(`${c.name} T=${seqLen} webgpu unfused`, unfused, expected);
      }
    },
  });
}

/** Every key of batch entry 0 hidden: its rows are zero with finite, zero gradients. */
async function checkFullyMasked(backend: Backend): Promise<void> {
  const c: Case = {
    name: "fully masked",
    batch: 2,
    heads: 2,
    kvHeads: 2,
    headDim: 3,
    valueDim: 3,
    hiddenKeys: [0, 1, 2, 3, 4],
  };
  const host = drawCase(c, 5, 7);
  const run = await runCase(backend, c, host, 5, true);
  const rowSize = 2 * 5 * 3;
  for (let i = 0; i < rowSize; i++) assert.equal(run.output[i], 0, `output ${i} is not 0`);
  for (const g of run.grads) {
    for (let i = 0; i < g.length; i++) assert.ok(Number.isFinite(g[i]), `gradient ${i} is ${g[i]}`);
  }
  // dq of the masked batch entry is exactly zero.
  for (let i = 0; i < rowSize; i++) assert.equal(run.grads[0][i], 0, `dq ${i} is not 0`);
}

Deno.test("attention fully masked rows cpu", () => checkFullyMasked(cpu));

Deno.test({
  name: "attention fully masked rows webgpu",
  ...gpuOptions,
  fn: () => checkFullyMasked(gpu!),
});

Deno.test("attentionKeepEnds ties keep later keys", async () => {
  const scores = Tensor.fromArray(cpu, [0, 0, 0, 0, 0], [1, 5], "f32");
  const ends = await attentionKeepEnds(scores, 2).data();
  // Equal scores reduce to a sliding window of 2.
  assert.deepEqual(Array.from(ends), [2, 3, 4, 5, 5]);
  scores.dispose();
});

Deno.test({
  name: "attention webgpu cleanup",
  ...gpuOptions,
  fn: async () => {
    await gpu!.dispose();
  },
});
