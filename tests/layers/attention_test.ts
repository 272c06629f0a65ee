/**
 * Attention variants on the float64 CPU backend: each fused variant against the same module on
 * the unfused path, finite-difference checks of sink, key-bias and MoH gate parameters, the
 * diagnostics on hand-built maps, config errors, and a decoder LM with every variant.
 */

import assert from "node:assert/strict";
import type { Backend } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import {
  add,
  addScalar,
  backward,
  concat,
  exp,
  log,
  mul,
  neg,
  noGrad,
  relu,
  Rng,
  rope as ropeOp,
  sumAll,
  Tensor,
  transpose,
  withScopeAsync,
} from "../../tensor/mod.ts";
import type { AttentionContext } from "../../layers/attention/base.ts";
import {
  collectAttentionDiagnostics,
  dmaKeptFraction,
  sinkRate,
} from "../../layers/attention/diagnostics.ts";
import { DynamicMaskAttention } from "../../layers/attention/dma.ts";
import {
  defaultDotProductConfig,
  DotProductAttention,
  type DotProductConfig,
} from "../../layers/attention/dot_product.ts";
import type { MultiHeadLatentAttention } from "../../layers/attention/mla.ts";
import { MixtureOfHeadsAttention, mohOptionsSchema } from "../../layers/attention/moh.ts";
import { createAttention } from "../../layers/attention/registry.ts";
import { unfusedAttention } from "../../layers/attention/unfused.ts";
import type { Module } from "../../layers/module.ts";
import { DecoderLM } from "../../layers/models/decoder_lm.ts";
import { RopeTables } from "../../layers/rope.ts";

const backend = createCpuBackend({ precision: "f64" });
const TOL = 1e-9;

function context(seed: number, overrides: Partial<AttentionContext> = {}): AttentionContext {
  return {
    backend,
    rng: new Rng(seed),
    dModel: 8,
    numHeads: 4,
    initStd: 0.5,
    outputInitStd: 0.5,
    rope: null,
    ...overrides,
  };
}

function input(b: Backend, seed: number, shape: number[]): Tensor {
  return Tensor.fromArray(b, new Rng(seed).normalArray(shape.reduce((x, y) => x * y, 1)), shape);
}

/** Output and every parameter gradient of `objective(module(x))`, read back to the host. */
async function outputsAndGrads(
  module: Module & { forward(x: Tensor): Tensor; auxLoss?: Tensor | null },
  x: Tensor,
): Promise<{ output: number[]; grads: Map<string, number[]> }> {
  return await withScopeAsync(async () => {
    const y = module.forward(x);
    const projection = input(backend, 99, [...y.shape]);
    let loss = sumAll(mul(y, projection));
    if (module.auxLoss) loss = add(loss, module.auxLoss);
    backward(loss);
    const grads = new Map<string, number[]>();
    for (const [name, p] of module.parameters()) {
      grads.set(name, p.grad === null ? [] : Array.from(await p.grad.data()));
      p.grad?.dispose();
      p.grad = null;
    }
    return { output: Array.from(await y.data()), grads };
  });
}

function assertClose(name: string, actual: number[], expected: number[], tol = TOL): void {
  assert.equal(actual.length, expected.length, `${name}: length`);
  for (let i = 0; i < actual.length; i++) {
    const ok = Math.abs(actual[i] - expected[i]) <= tol * Math.max(1, Math.abs(expected[i]));
    assert.ok(ok, `${name}: element ${i} is ${actual[i]}, expected ${expected[i]}`);
  }
}

const VARIANTS: { name: string; config: Partial<DotProductConfig>; rope?: boolean }[] = [
  { name: "mha grouped query with rope", config: { numKvHeads: 2 }, rope: true },
  { name: "mha multi query alibi", config: { numKvHeads: 1, alibi: true } },
  { name: "window", config: { window: 3 } },
  { name: "moa spans", config: { spans: { alpha: [1, 2, 0, 4], beta: [0, 0.25, 0.5, 0] } } },
  { name: "moa initial keys", config: { window: 2, initialKeys: 1 } },
  { name: "sink logit", config: { sink: "logit", sinkInit: 0.3 } },
  { name: "key bias", config: { sink: "keyBias" } },
  { name: "gated elementwise", config: { gate: "elementwise" } },
  { name: "gated headwise", config: { gate: "headwise", numKvHeads: 2 } },
];

for (const v of VARIANTS) {
  Deno.test(`attention variant fused matches unfused ${v.name}`, async () => {
    for (const seqLen of [1, 7, 13]) {
      const rope = v.rope ? new RopeTables(backend, 2) : null;
      const build = (kernel: "fused" | "unfused") =>
        new DotProductAttention(context(3, { rope }), {
          ...defaultDotProductConfig(4),
          ...v.config,
          kernel,
        });
      const x = input(backend, seqLen, [2, seqLen, 8]);
      const fused = await outputsAndGrads(build("fused"), x);
      const unfused = await outputsAndGrads(build("unfused"), x);
      assertClose(`${v.name} T=${seqLen} output`, fused.output, unfused.output);
      for (const [name, g] of unfused.grads) {
        assertClose(`${v.name} T=${seqLen} ${name}`, fused.grads.get(name)!, g);
      }
      rope?.dispose();
    }
  });
}

Deno.test("attention variant moh fused matches unfused", async () => {
  for (const seqLen of [1, 7, 13]) {
    const options = mohOptionsSchema.parse({ sharedHeads: 1, topK: 2 });
    const x = input(backend, 40 + seqLen, [2, seqLen, 8]);
    const fused = await outputsAndGrads(
      new MixtureOfHeadsAttention(context(5), { ...options, kernel: "fused" }),
      x,
    );
    const unfused = await outputsAndGrads(
      new MixtureOfHeadsAttention(context(5), { ...options, kernel: "unfused" }),
      x,
    );
    assertClose(`moh T=${seqLen} output`, fused.output, unfused.output);
    for (const [name, g] of unfused.grads) {
      assert.ok(g.length > 0, `moh: ${name} received no gradient`);
      assertClose(`moh T=${seqLen} ${name}`, fused.grads.get(name)!, g);
    }
  }
});

Deno.test("attention variant sigmoid proxy rows sum to one", async () => {
  await withScopeAsync(async () => {
    const module = createAttention({ name: "sigmoid" }, context(6)) as DotProductAttention;
    const x = input(backend, 1, [1, 5, 8]);
    const { probs } = module.forwardWithProbs(x);
    assert.ok(probs !== undefined);
    const values = await probs.data();
    for (let row = 0; row < values.length / 5; row++) {
      let total = 0;
      for (let j = 0; j < 5; j++) total += values[row * 5 + j];
      assert.ok(Math.abs(total - 1) < 1e-6, `row ${row} sums to ${total}`);
    }
    backward(sumAll(module.forward(x)));
    assert.ok(module.query.weight.grad !== null, "query.weight has no gradient");
  });
});

/** softplus as DMA computes it, for the hand-built reference. */
function softplus(x: Tensor): Tensor {
  return add(relu(x), log(addScalar(exp(neg(add(relu(x), relu(neg(x))))), 1)));
}

Deno.test("attention variant dma matches unfused reference", async () => {
  for (const seqLen of [1, 7, 13]) {
    const module = new DynamicMaskAttention(context(8), {
      keep: 3,
      biasForm: "log",
      scaleInit: 0.7,
      numKvHeads: 2,
      alibi: false,
    });
    const x = input(backend, 60 + seqLen, [2, seqLen, 8]);
    const fused = await outputsAndGrads(module, x);

    const ends = await withScopeAsync(async () => {
      noGrad(() => module.forward(x));
      return Array.from(await module.keyEnds!.data());
    });
    const reference = {
      parameters: () => module.parameters(),
      forward(input: Tensor): Tensor {
        const [b, t] = input.shape;
        const split = (y: Tensor, heads: number) => transpose(y.reshape([b, t, heads, 2]), 1, 2);
        const q = split(module.query.forward(input), 4);
        const k = split(module.key.forward(input), 2);
        const v = split(module.value.forward(input), 2);
        const values = transpose(v, 1, 2).reshape([b, t, -1]);
        const bias = mul(softplus(module.maskProjection.forward(values)), module.maskScale);
        const { output } = unfusedAttention(q, k, v, {
          bias: transpose(bias, 1, 2),
          keyEnds: ends,
        });
        return module.output.forward(transpose(output, 1, 2).reshape([b, t, 8]));
      },
    } as unknown as Module & { forward(x: Tensor): Tensor };
    const expected = await outputsAndGrads(reference, x);
    assertClose(`dma T=${seqLen} output`, fused.output, expected.output);
    for (const [name, g] of expected.grads) {
      assertClose(`dma T=${seqLen} ${name}`, fused.grads.get(name)!, g);
    }
    assert.ok(fused.grads.get("maskScale")!.some((g) => g !== 0) || seqLen === 1);
  }
});

Deno.test("attention variant mla matches unfused reference", async () => {
  for (const seqLen of [1, 7, 13]) {
    const module = createAttention(
      { name: "mla", kvLatent: 4, queryLatent: 6, ropeDim: 2 },
      context(9),
    ) as MultiHeadLatentAttention;
    const x = input(backend, 80 + seqLen, [2, seqLen, 8]);
    const fused = await outputsAndGrads(module, x);
    const rope = new RopeTables(backend, 2);
    const reference = {
      parameters: () => module.parameters(),
      forward(input: Tensor): Tensor {
        const [b, t] = input.shape;
        const split = (y: Tensor, heads: number, dim: number) =>
          transpose(y.reshape([b, t, heads, dim]), 1, 2);
        const { cos, sin } = rope.get(t);
        const latent = module.kvNorm.forward(module.kvDown.forward(input));
        const queryLatent = module.queryNorm!.forward(module.queryDown!.forward(input));
        const q = concat([
          split(module.query.forward(queryLatent), 4, 2),
          ropeOp(split(module.queryRope.forward(queryLatent), 4, 2), cos, sin),
        ], 3);
        const sharedKey = ropeOp(split(module.keyRope.forward(input), 1, 2), cos, sin);
        const k = concat([
          split(module.keyUp.forward(latent), 4, 2),
          concat([sharedKey, sharedKey, sharedKey, sharedKey], 1),
        ], 3);
        const v = split(module.valueUp.forward(latent), 4, 2);
        const { output } = unfusedAttention(q, k, v, { scale: 1 / Math.sqrt(4) });
        return module.output.forward(transpose(output, 1, 2).reshape([b, t, 8]));
      },
    } as unknown as Module & { forward(x: Tensor): Tensor };
    const expected = await outputsAndGrads(reference, x);
    assertClose(`mla T=${seqLen} output`, fused.output, expected.output);
    for (const [name, g] of expected.grads) {
      assertClose(`mla T=${seqLen} ${name}`, fused.grads.get(name)!, g);
    }
    rope.dispose();
  }
});

/** Central differences of sum(module(x) ⊙ projection) with respect to the named parameters. */
async function gradcheckParameters(
  module: Module & { forward(x: Tensor): Tensor; auxLoss?: Tensor | null },
  x: Tensor,
  names: string[],
): Promise<void> {
  const { grads } = await outputsAndGrads(module, x);
  const params = module.parameters();
  const h = 1e-6;
  const objective = async () =>
    await withScopeAsync(async () => {
      const y = noGrad(() => module.forward(x));
      let loss = sumAll(mul(y, input(backend, 99, [...y.shape])));
      if (module.auxLoss) loss = add(loss, module.auxLoss);
      return await loss.item();
    });
  for (const name of names) {
    const p = params.get(name);
    assert.ok(p !== undefined, `no parameter ${name}`);
    const values = Float64Array.from(await p.data());
    const write = (data: Float64Array) => {
      const src = backend.upload(data, "f32");
      backend.copyAxis(src, p.storage, {
        outer: 1,
        inner: 1,
        srcAxisLen: data.length,
        dstAxisLen: data.length,
        srcStart: 0,
        dstStart: 0,
        len: data.length,
      });
      backend.release(src);
    };
    for (let j = 0; j < values.length; j++) {
      const shifted = values.slice();
      shifted[j] = values[j] + h;
      write(shifted);
      const up = await objective();
      shifted[j] = values[j] - h;
      write(shifted);
      const down = await objective();
      write(values);
      const numeric = (up - down) / (2 * h);
      const analytic = grads.get(name)![j];
      const error = Math.abs(numeric - analytic) / Math.max(1, Math.abs(numeric));
      assert.ok(error < 1e-6, `${name}[${j}]: analytic ${analytic} vs numeric ${numeric}`);
    }
  }
}

Deno.test("gradcheck sink logit", async () => {
  const module = new DotProductAttention(context(11), {
    ...defaultDotProductConfig(4),
    kernel: "fused",
    sink: "logit",
    sinkInit: 0.5,
  });
  await gradcheckParameters(module, input(backend, 2, [2, 5, 8]), ["sinkLogit"]);
});

Deno.test("gradcheck key bias", async () => {
  const module = new DotProductAttention(context(12), {
    ...defaultDotProductConfig(4),
    kernel: "fused",
    sink: "keyBias",
  });
  await gradcheckParameters(module, input(backend, 3, [1, 6, 8]), ["sinkKey"]);
});

Deno.test("gradcheck moh gates", async () => {
  const options = mohOptionsSchema.parse({ sharedHeads: 2, topK: 1, loadBalanceWeight: 0.5 });
  const module = new MixtureOfHeadsAttention(context(13), options);
  await gradcheckParameters(module, input(backend, 4, [2, 4, 8]), [
    "sharedGate.weight",
    "routedGate.weight",
    "stageGate.weight",
  ]);
});

Deno.test("sink rate of hand-built maps", () => {
  const t = 4;
  // Head 0 puts all weight on key 0; head 1 attends uniformly over visible keys.
  const probs = new Float64Array(2 * t * t);
  for (let i = 0; i < t; i++) {
    probs[i * t] = 1;
    for (let j = 0; j <= i; j++) probs[t * t + i * t + j] = 1 / (i + 1);
  }
  // Head 1's key-0 importance is (1 + 1/2 + 1/3 + 1/4) / 4 ≈ 0.52, above 0.3 as well.
  assert.equal(sinkRate([{ probs, batch: 1, heads: 2, seqLen: t }], 0.3), 1);
  assert.equal(sinkRate([{ probs, batch: 1, heads: 2, seqLen: t }], 0.6), 0.5);
});

Deno.test("dma kept fraction counts kept keys", () => {
  // Ends of a window of 2 over 4 keys: queries keep 1, 2, 2, 2 of 1, 2, 3, 4 keys.
  const fraction = dmaKeptFraction([2, 3, 4, 4], 1, 4);
  assert.ok(Math.abs(fraction - (1 + 1 + 2 / 3 + 2 / 4) / 4) < 1e-12);
});

Deno.test("attention config errors name path value and fix", () => {
  assert.throws(
    () => createAttention({ name: "mha" }, context(1, { numHeads: 3 })),
    /model\.numHeads is 3 but dModel is 8/,
  );
  assert.throws(
    () => createAttention({ name: "mha", numKvHeads: 3 }, context(1)),
    /model\.attention\.numKvHeads is 3 but numHeads is 4; choose a divisor of 4/,
  );
  assert.throws(
    () => createAttention({ name: "window", window: 0 }, context(1)),
    /model\.attention\.window is 0: window must be at least 1 key/,
  );
  assert.throws(
    () => createAttention({ name: "moh", sharedHeads: 3, topK: 2 }, context(1)),
    /model\.attention\.topK is 2 but only 1 heads are routed/,
  );
  assert.throws(() => createAttention({ name: "nope" as "mha" }, context(1)), /choose one of mha/);
});

Deno.test("dma warns when keep is not below seqLen", () => {
  const warnings: string[] = [];
  const original = console.warn;
  console.warn = (message: string) => warnings.push(message);
  try {
    createAttention({ name: "dma", keep: 16 }, context(1, { maxSeqLen: 16 }));
  } finally {
    console.warn = original;
  }
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /keep is 16 but the sequence length is 16.*Choose keep < 16/s);
});

const MODEL_SPECS = [
  { name: "mha" },
  { name: "mha", numKvHeads: 1, alibi: true, kernel: "fused" },
  { name: "window", window: 2 },
  { name: "moa", alpha: [1, 0], beta: [0, 0.5] },
  { name: "sigmoid" },
  { name: "keyBias" },
  { name: "sinkLogit" },
  { name: "gated", gate: "headwise" },
  { name: "moh", sharedHeads: 1, topK: 1 },
  { name: "dma", keep: 2 },
  { name: "mla", kvLatent: 4, queryLatent: 4, ropeDim: 2 },
  { name: "mla", queryLatent: 0 },
] as const;

Deno.test("decoder lm trains with every attention variant", async () => {
  for (const spec of MODEL_SPECS) {
    const model = new DecoderLM(backend, new Rng(1), {
      vocabSize: 11,
      maxSeqLen: 6,
      dModel: 8,
      numLayers: 2,
      numHeads: 2,
      dFF: 16,
      mlp: "gelu",
      norm: "rmsnorm",
      position: "rope",
      tieEmbeddings: true,
      normEps: 1e-5,
      initStd: 0.2,
      attention: { ...spec },
    });
    const ids = Tensor.fromArray(backend, Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), [2, 5]);
    await withScopeAsync(async () => {
      const loss = model.loss(ids, ids);
      backward(loss);
      assert.ok(Number.isFinite(await loss.item()), `${spec.name}: loss is not finite`);
    });
    for (const [name, p] of model.parameters()) {
      assert.ok(p.grad !== null, `${spec.name}: ${name} has no gradient`);
    }

    const diagnostics = await collectAttentionDiagnostics(model, ids);
    assert.ok(diagnostics.sinkRate >= 0 && diagnostics.sinkRate <= 1, `${spec.name}: sink rate`);
    assert.equal(diagnostics.entropy.length, 4, `${spec.name}: entropy rows`);
    if (spec.name === "moh") {
      assert.equal(diagnostics.mohUsage[0].activeFraction, 1, "moh: 2 of 2 heads active");
    }
    if (spec.name === "dma") assert.equal(diagnostics.dmaKept.length, 2, "dma: kept rows");
    model.dispose();
    ids.dispose();
  }
});

Deno.test("mha default keeps original ops", () => {
  const module = createAttention({ name: "mha" }, context(2)) as DotProductAttention;
  assert.equal(module.config.kernel, "unfused");
  assert.deepEqual(
    [...module.parameters().keys()],
    ["query.weight", "key.weight", "value.weight", "output.weight"],
  );
});
