/**
 * Non-causal attention (`causal: false` in the context) on the float64 CPU backend: mha against a
 * host reference and finite differences, every variant that accepts it, and the rejections of the
 * variants defined over past keys.
 */

import assert from "node:assert/strict";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import {
  AttentionConfigError,
  type AttentionContext,
  type AttentionModule,
} from "../../layers/attention/base.ts";
import { createAttention } from "../../layers/attention/registry.ts";
import { unfusedAttention } from "../../layers/attention/unfused.ts";
import { backward, mul, Rng, sumAll, Tensor, withScopeAsync } from "../../tensor/mod.ts";
import { gradcheck } from "../helpers/gradcheck.ts";

const backend = createCpuBackend({ precision: "f64" });
const TOL = 1e-9;
const D_MODEL = 8;
const HEADS = 2;

function context(seed: number, overrides: Partial<AttentionContext> = {}): AttentionContext {
  return {
    backend,
    rng: new Rng(seed),
    dModel: D_MODEL,
    numHeads: HEADS,
    initStd: 0.5,
    outputInitStd: 0.5,
    rope: null,
    ...overrides,
  };
}

function randomInput(seed: number, shape: readonly number[]): Float64Array {
  return new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1));
}

function assertClose(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>) {
  assert.equal(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    const error = Math.abs(actual[i] - expected[i]) / Math.max(1, Math.abs(expected[i]));
    assert.ok(error <= TOL, `${label}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

/** y = x·Wᵀ for row-major x [rows, inputs] and W [outputs, inputs], in float64. */
function linearHost(x: Float64Array, w: Float64Array, rows: number, inputs: number): Float64Array {
  const outputs = w.length / inputs;
  const y = new Float64Array(rows * outputs);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outputs; o++) {
      let total = 0;
      for (let i = 0; i < inputs; i++) total += x[r * inputs + i] * w[o * inputs + i];
      y[r * outputs + o] = total;
    }
  }
  return y;
}

/** Unmasked multi-head attention over x [batch, seqLen, dModel] from the module's weights. */
async function referenceMha(
  module: AttentionModule,
  x: Float64Array,
  batch: number,
  seqLen: number,
): Promise<Float64Array> {
  const params = module.parameters();
  const weight = async (name: string) => Float64Array.from(await params.get(name)!.data());
  const rows = batch * seqLen;
  const q = linearHost(x, await weight("query.weight"), rows, D_MODEL);
  const k = linearHost(x, await weight("key.weight"), rows, D_MODEL);
  const v = linearHost(x, await weight("value.weight"), rows, D_MODEL);
  const headDim = D_MODEL / HEADS;
  const merged = new Float64Array(rows * D_MODEL);

  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < HEADS; h++) {
      for (let i = 0; i < seqLen; i++) {
        const at = (t: Float64Array, pos: number, e: number) =>
          t[(b * seqLen + pos) * D_MODEL + h * headDim + e];
        const scores = Array.from({ length: seqLen }, (_, j) => {
          let dot = 0;
          for (let e = 0; e < headDim; e++) dot += at(q, i, e) * at(k, j, e);
          return dot / Math.sqrt(headDim);
        });
        const max = Math.max(...scores);
        const weights = scores.map((s) => Math.exp(s - max));
        const total = weights.reduce((a, w) => a + w, 0);
        for (let e = 0; e < headDim; e++) {
          let value = 0;
          for (let j = 0; j < seqLen; j++) value += (weights[j] / total) * at(v, j, e);
          merged[(b * seqLen + i) * D_MODEL + h * headDim + e] = value;
        }
      }
    }
  }
  return linearHost(merged, await weight("output.weight"), rows, D_MODEL);
}

/** Output and parameter gradients of sum(module(x) ⊙ projection), read back to the host. */
async function outputsAndGrads(
  module: AttentionModule,
  x: Float64Array,
  shape: number[],
): Promise<{ output: number[]; grads: Map<string, number[]> }> {
  return await withScopeAsync(async () => {
    const y = module.forward(Tensor.fromArray(backend, x, shape));
    const projection = Tensor.fromArray(backend, randomInput(99, y.shape), [...y.shape]);
    backward(sumAll(mul(y, projection)));
    const grads = new Map<string, number[]>();
    for (const [name, p] of module.parameters()) {
      grads.set(name, p.grad === null ? [] : [...await p.grad.data()]);
    }
    const output = [...await y.data()];
    for (const p of module.parameters().values()) p.grad = null;
    return { output, grads };
  });
}

// The fused kernel is causal only, so `kernel: fused` must fall back to the unfused path.
for (const kernel of ["unfused", "fused"]) {
  Deno.test(`non-causal mha ${kernel} matches host reference`, async () => {
    for (const seqLen of [1, 5]) {
      const shape = [2, seqLen, D_MODEL];
      const x = randomInput(seqLen, shape);
      const module = createAttention({ name: "mha", kernel }, context(3, { causal: false }));
      const actual = await withScopeAsync(async () => [
        ...await module.forward(Tensor.fromArray(backend, x, shape)).data(),
      ]);
      assertClose(`T=${seqLen} output`, actual, await referenceMha(module, x, 2, seqLen));
      module.dispose();
    }
  });
}

Deno.test("non-causal mha input gradient matches finite differences", async () => {
  const module = createAttention({ name: "mha" }, context(4, { causal: false }));
  await gradcheck(
    backend,
    "non-causal mha",
    [{ shape: [1, 4, D_MODEL] }],
    (x) => module.forward(x),
  );
  module.dispose();
});

Deno.test("non-causal mha first query sees last key", async () => {
  const shape = [1, 4, D_MODEL];
  const x = randomInput(6, shape);
  const changed = x.slice();
  for (let e = 0; e < D_MODEL; e++) changed[3 * D_MODEL + e] += 1;

  for (const causal of [true, false]) {
    const module = createAttention({ name: "mha" }, context(7, { causal }));
    const firstRow = async (values: Float64Array) =>
      await withScopeAsync(async () => {
        const y = await module.forward(Tensor.fromArray(backend, values, shape)).data();
        return [...y].slice(0, D_MODEL);
      });
    const before = await firstRow(x);
    const after = await firstRow(changed);
    const moved = before.some((value, e) => Math.abs(value - after[e]) > 1e-6);
    assert.equal(moved, !causal, `causal ${causal}: first output moved ${moved}`);
    module.dispose();
  }
});

Deno.test("causal default unchanged by explicit causal true", async () => {
  const shape = [2, 5, D_MODEL];
  const x = randomInput(8, shape);
  for (const spec of [{ name: "mha" }, { name: "mha", kernel: "fused" }, { name: "moh" }]) {
    const implicit = await outputsAndGrads(createAttention(spec, context(9)), x, shape);
    const explicit = await outputsAndGrads(
      createAttention(spec, context(9, { causal: true })),
      x,
      shape,
    );
    assertClose(`${spec.name} output`, explicit.output, implicit.output);
    for (const [name, g] of implicit.grads) {
      assertClose(`${spec.name} ${name}`, explicit.grads.get(name)!, g);
    }
  }
});

const NON_CAUSAL_VARIANTS = [
  { name: "mha", numKvHeads: 1 },
  { name: "mha", alibi: true },
  { name: "moh", sharedHeads: 1, topK: 1 },
  { name: "sinkLogit" },
  { name: "keyBias" },
  { name: "gated" },
  { name: "sigmoid" },
  { name: "mla" },
];

for (const spec of NON_CAUSAL_VARIANTS) {
  const label = JSON.stringify(spec);
  Deno.test(`non-causal ${label} differs from causal`, async () => {
    const shape = [1, 5, D_MODEL];
    const x = randomInput(12, shape);
    const causal = await outputsAndGrads(createAttention(spec, context(13)), x, shape);
    const open = await outputsAndGrads(
      createAttention(spec, context(13, { causal: false })),
      x,
      shape,
    );
    assert.ok(open.output.every(Number.isFinite), `${label}: non-finite output`);
    // The first query sees only itself when causal, so its output must change.
    const firstMoved = open.output.slice(0, D_MODEL).some((value, e) =>
      Math.abs(value - causal.output[e]) > 1e-9
    );
    assert.ok(firstMoved, `${label}: first output unchanged by causal: false`);
    for (const [name, g] of open.grads) {
      assert.ok(g.every(Number.isFinite), `${label}: non-finite gradient of ${name}`);
    }
  });
}

Deno.test("non-causal rejects past-key variants", () => {
  const specs = [
    { name: "window", window: 2 },
    { name: "moa", alpha: [1, 2], beta: [0, 0.5] },
    { name: "dma", keep: 2 },
  ];
  for (const spec of specs) {
    assert.throws(
      () => createAttention(spec, context(1, { causal: false, maxSeqLen: 8 })),
      (error: Error) =>
        error instanceof AttentionConfigError &&
        error.message.includes(`model.attention.name is ${spec.name}`) &&
        error.message.includes("non-causal; choose mha"),
      spec.name,
    );
  }
});

Deno.test("unfusedAttention non-causal alibi is symmetric", async () => {
  const shape = [1, 1, 3, 2];
  const zeros = new Float64Array(6);
  const q = Tensor.fromArray(backend, zeros, shape);
  const k = Tensor.fromArray(backend, zeros, shape);
  const v = Tensor.fromArray(backend, randomInput(14, shape), shape);
  const { probs } = unfusedAttention(q, k, v, { causal: false, alibiSlopes: [1] });
  const p = await probs.data();
  // Equal scores, so the weights follow exp(−|i − j|) alone: row 1 weighs keys 0 and 2 equally.
  assertClose("row 1 keys 0 and 2", [p[3]], [p[5]]);
  assertClose("row 0 sums to 1", [p[0] + p[1] + p[2]], [1]);
  assertClose("row 0 key 2", [p[2]], [Math.exp(-2) / (1 + Math.exp(-1) + Math.exp(-2))]);
  for (const t of [q, k, v, probs]) t.dispose();
});
