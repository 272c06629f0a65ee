/**
 * GAAM and ACT on the float64 CPU backend. GAAM's Gaussian weights are compared with a host
 * reference and the layer with MHA on the re-weighted input. Finite differences check the mean
 * offset and spread, and a decoder LM takes three steps on CPU and WebGPU. ACT runs on hand-built
 * maps.
 */

import assert from "node:assert/strict";
import type { Backend } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { backward, noGrad, Rng, sumAll, Tensor, withScopeAsync } from "../../tensor/mod.ts";
import type { AttentionContext } from "../../layers/attention/base.ts";
import { calibrateOptionsSchema, calibrateProbs } from "../../layers/attention/calibration.ts";
import type { DotProductAttention } from "../../layers/attention/dot_product.ts";
import {
  type GaamOptions,
  gaamOptionsSchema,
  GaussianAdaptiveAttention,
  gaussianWeights,
} from "../../layers/attention/gaam.ts";
import { createAttention } from "../../layers/attention/registry.ts";
import { DecoderLM } from "../../layers/models/decoder_lm.ts";
import { zeroGrad } from "../../optim/clip.ts";
import { createOptimizer } from "../../optim/create.ts";
import { gradcheck } from "../helpers/gradcheck.ts";

const backend = createCpuBackend({ precision: "f64" });
const TOL = 1e-9;

function context(seed: number): AttentionContext {
  return {
    backend,
    rng: new Rng(seed),
    dModel: 8,
    numHeads: 2,
    initStd: 0.5,
    outputInitStd: 0.5,
    rope: null,
  };
}

/** G of one [B, T, d] input on the host, following the GAAM equations literally. */
function referenceWeights(
  x: Float64Array,
  shape: [number, number, number],
  heads: number,
  delta: (head: number, feature: number) => number,
  spread: (head: number, feature: number) => number,
  options: Pick<GaamOptions, "axis" | "spread" | "eps">,
): Float64Array {
  const [batch, seqLen, dModel] = shape;
  const chunk = dModel / heads;
  const out = new Float64Array(x.length);
  const at = (b: number, t: number, f: number) => x[(b * seqLen + t) * dModel + f];
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seqLen; t++) {
      for (let f = 0; f < dModel; f++) {
        const head = Math.floor(f / chunk);
        const values: number[] = [];
        if (options.axis === "features") {
          for (let g = head * chunk; g < (head + 1) * chunk; g++) values.push(at(b, t, g));
        } else {
          for (let s = 0; s <= t; s++) values.push(at(b, s, f));
        }
        const mu = values.reduce((a, v) => a + v, 0) / values.length;
        const variance = values.reduce((a, v) => a + (v - mu) ** 2, 0) / values.length;
        const y = (at(b, t, f) - mu - delta(head, f % chunk)) / Math.sqrt(variance + options.eps);
        const c = spread(head, f % chunk);
        const twoVariance = options.spread === "c" ? 2 * c * c : 2 * c;
        out[(b * seqLen + t) * dModel + f] = Math.exp(-(y * y) / twoVariance);
      }
    }
  }
  return out;
}

function parse(options: Record<string, unknown>): GaamOptions {
  return gaamOptionsSchema.parse(options);
}

for (const axis of ["tokens", "features"] as const) {
  for (const spread of ["c", "xi"] as const) {
    Deno.test(`gaam weights match host reference ${axis} ${spread}`, async () => {
      const options = parse({ axis, spread, eps: 1e-3 });
      const shape: [number, number, number] = [2, 5, 8];
      const x = new Rng(3).normalArray(40 * 2);
      const delta = new Rng(4).normalArray(4, 0.3);
      const spreads = Float64Array.from(new Rng(5).normalArray(4, 0.3), (v) => 1.5 + v);
      const actual = await withScopeAsync(async () => {
        const weights = gaussianWeights(
          Tensor.fromArray(backend, x, shape),
          Tensor.fromArray(backend, delta, [4, 1]),
          Tensor.fromArray(backend, spreads, [4, 1]),
          options,
        );
        return Float64Array.from(await weights.data());
      });
      const expected = referenceWeights(x, shape, 4, (h) => delta[h], (h) => spreads[h], options);
      for (let i = 0; i < expected.length; i++) {
        assert.ok(
          Math.abs(actual[i] - expected[i]) <= TOL,
          `G[${i}]: ${actual[i]} vs reference ${expected[i]}`,
        );
      }
    });
  }
}

Deno.test("gaam weights per-feature parameters", async () => {
  const options = parse({ axis: "features", parameters: "feature" });
  const shape: [number, number, number] = [1, 3, 8];
  const x = new Rng(6).normalArray(24);
  const delta = new Rng(7).normalArray(8, 0.3);
  const spreads = Float64Array.from(new Rng(8).normalArray(8, 0.2), (v) => 2 + v);
  const actual = await withScopeAsync(async () => {
    const weights = gaussianWeights(
      Tensor.fromArray(backend, x, shape),
      Tensor.fromArray(backend, delta, [2, 4]),
      Tensor.fromArray(backend, spreads, [2, 4]),
      options,
    );
    return Float64Array.from(await weights.data());
  });
  const expected = referenceWeights(
    x,
    shape,
    2,
    (h, f) => delta[h * 4 + f],
    (h, f) => spreads[h * 4 + f],
    options,
  );
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= TOL, `G[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
});

Deno.test("gaam layer equals mha on reweighted input", async () => {
  // Both modules draw the same projection weights from the same seed; GAAM's δ and c use no rng.
  const gaam = createAttention(
    { name: "gaam", meanOffsetInit: 0.2, spreadInit: 1.3 },
    context(11),
  ) as GaussianAdaptiveAttention;
  const mha = createAttention({ name: "mha" }, context(11)) as DotProductAttention;
  const shape: [number, number, number] = [2, 4, 8];
  const x = new Rng(12).normalArray(64);
  const options = parse({});

  const [actual, expected, xGrad] = await withScopeAsync(async () => {
    const input = Tensor.fromArray(backend, x, shape);
    input.requiresGrad = true;
    const output = gaam.forward(input);
    backward(sumAll(output));

    const weights = referenceWeights(x, shape, 2, () => 0.2, () => 1.3, options);
    const reweighted = Tensor.fromArray(backend, x.map((v, i) => v * weights[i]), shape);
    const reference = mha.forward(reweighted);
    return [
      Float64Array.from(await output.data()),
      Float64Array.from(await reference.data()),
      Float64Array.from(await input.grad!.data()),
    ];
  });
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= TOL, `y[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
  assert.ok(xGrad.every(Number.isFinite), "input gradient is finite");
  const names = [...gaam.parameters().keys()];
  assert.ok(names.includes("meanOffset"), `parameters: ${names.join(", ")}`);
  assert.ok(names.includes("spread"), `parameters: ${names.join(", ")}`);
  for (const [name, p] of gaam.parameters()) assert.ok(p.grad !== null, `${name} has no gradient`);
  gaam.dispose();
  mha.dispose();
});

for (const axis of ["tokens", "features"] as const) {
  for (const spread of ["c", "xi"] as const) {
    Deno.test(`gradcheck gaam mean offset and spread ${axis} ${spread}`, async () => {
      const options = parse({ axis, spread, eps: 1e-2 });
      await gradcheck(
        backend,
        `gaam ${axis} ${spread}`,
        [
          { shape: [2, 4, 6] },
          { shape: [3, 1], values: Float64Array.from([0.1, -0.2, 0.3]) },
          { shape: [3, 1], values: Float64Array.from([1.5, 2, 1.2]) },
        ],
        (x, delta, c) => gaussianWeights(x, delta, c, options),
        { tolerance: 1e-5 },
      );
    });
  }
}

Deno.test("gradcheck gaam per-feature parameters", async () => {
  const options = parse({ axis: "tokens", parameters: "feature", eps: 1e-2 });
  await gradcheck(
    backend,
    "gaam per-feature",
    [
      { shape: [1, 3, 4] },
      { shape: [2, 2], values: Float64Array.from([0.1, -0.2, 0.3, 0]) },
      { shape: [2, 2], values: Float64Array.from([1.5, 2, 1.2, 1.8]) },
    ],
    (x, delta, c) => gaussianWeights(x, delta, c, options),
    { tolerance: 1e-5 },
  );
});

Deno.test("gaam config errors name path and fix", () => {
  assert.throws(
    () => createAttention({ name: "gaam", gaussianHeads: 3 }, context(1)),
    /model\.attention\.gaussianHeads is 3 but dModel is 8/,
  );
  assert.throws(
    () => createAttention({ name: "gaam", axis: "layers" }, context(1)),
    /model\.attention\.axis/,
  );
});

/** Losses of three AdamW steps of a tiny GAAM decoder on `b`. */
async function threeStepLosses(b: Backend): Promise<number[]> {
  const model = new DecoderLM(b, new Rng(1), {
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
    attention: { name: "gaam", meanOffsetInit: 0.1 },
  });
  const ids = Tensor.fromArray(b, Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), [2, 5]);
  const params = model.parameters();
  const { optimizer } = createOptimizer(params, { name: "adamw", lr: 0.05, weightDecay: 0 });
  const losses: number[] = [];
  for (let step = 0; step < 3; step++) {
    await withScopeAsync(async () => {
      const loss = model.loss(ids, ids);
      backward(loss);
      losses.push(await loss.item());
    });
    optimizer.update(1, null);
    zeroGrad(params.values());
  }
  optimizer.dispose();
  model.dispose();
  ids.dispose();
  return losses;
}

Deno.test({
  name: "gaam decoder three steps webgpu matches cpu",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const expected = await threeStepLosses(backend);
    assert.ok(expected[2] < expected[0], `cpu loss did not fall: ${expected.join(", ")}`);
    const { createWebGpuBackend } = await import("../../kernels/webgpu/backend.ts");
    const { BackendUnavailableError } = await import("../../kernels/backend.ts");
    let gpu;
    try {
      gpu = await createWebGpuBackend({ poison: true });
    } catch (error) {
      if (!(error instanceof BackendUnavailableError)) throw error;
      console.warn(`gaam webgpu comparison skipped: ${error.message}`);
      return;
    }
    const actual = await threeStepLosses(gpu);
    await gpu.dispose();
    for (let step = 0; step < 3; step++) {
      const error = Math.abs(actual[step] - expected[step]) / Math.abs(expected[step]);
      assert.ok(
        error <= 1e-4,
        `step ${step}: webgpu loss ${actual[step]} vs cpu ${expected[step]}`,
      );
    }
  },
});

/** Calibrates a [1, H, T, T] map given as rows with `options` and returns its rows. */
async function calibrate(
  rows: number[][][],
  options: Record<string, unknown>,
): Promise<number[][][]> {
  const heads = rows.length;
  const t = rows[0].length;
  const parsed = calibrateOptionsSchema.parse({ enabled: true, ...options });
  const visible = new Float64Array(heads * t);
  for (let h = 0; h < heads; h++) for (let i = 0; i < t; i++) visible[h * t + i] = i + 1;
  return await withScopeAsync(async () => {
    const probs = Tensor.fromArray(backend, rows.flat(2), [1, heads, t, t]);
    const out = await calibrateProbs(probs, parsed, {
      numHeads: heads,
      seqLen: t,
      visibleKeys: visible,
    })
      .data();
    return rows.map((head, h) =>
      head.map((_, i) => Array.from(out.slice((h * t + i) * t, (h * t + i + 1) * t)))
    );
  });
}

const HAND_MAP = [
  [1, 0, 0, 0],
  [0.5, 0.5, 0, 0],
  [0.8, 0.1, 0.1, 0],
  [0.1, 0.7, 0.1, 0.1],
];

function assertClose(actual: number[], expected: number[], what: string): void {
  for (let j = 0; j < expected.length; j++) {
    assert.ok(
      Math.abs(actual[j] - expected[j]) <= 1e-12,
      `${what}[${j}]: ${actual[j]} vs ${expected[j]}`,
    );
  }
}

Deno.test("act scales sink and redistributes mass", async () => {
  // α = 2: row 3 has τ = 0.5, so key 1 (0.7) is a sink; it keeps 0.4·0.7 and the freed 0.42
  // goes to keys 0, 2 and 3 in proportion to their 0.1 each.
  const [head] = await calibrate([HAND_MAP], { threshold: 2, scale: 0.4 });
  assertClose(head[3], [0.24, 0.28, 0.24, 0.24], "row 3");
  assert.ok(Math.abs(head[3].reduce((a, v) => a + v, 0) - 1) <= 1e-12, "row 3 sums to 1");
  // Row 2's first key (0.8 > τ = 2/3) is excluded by default; rows 0 and 1 have no sink.
  assertClose(head[2], HAND_MAP[2], "row 2");
  assertClose(head[1], HAND_MAP[1], "row 1");
  assertClose(head[0], HAND_MAP[0], "row 0");
});

Deno.test("act calibrates first token when not excluded", async () => {
  const [head] = await calibrate([HAND_MAP], { threshold: 2, scale: 0.5, excludeFirst: false });
  // Row 2: key 0 keeps 0.4, the freed 0.4 doubles keys 1 and 2.
  assertClose(head[2], [0.4, 0.3, 0.3, 0], "row 2");
  assert.ok(head[2][0] < HAND_MAP[2][0], "first-token sink weight falls");
});

Deno.test("act calibrates only selected heads", async () => {
  const [first, second] = await calibrate([HAND_MAP, HAND_MAP], { threshold: 2, heads: [1] });
  assertClose(first[3], HAND_MAP[3], "head 0 row 3");
  assertClose(second[3], [0.24, 0.28, 0.24, 0.24], "head 1 row 3");
});

Deno.test("act applies only in evaluation forwards", async () => {
  const spec = { name: "mha", calibrate: { enabled: true, threshold: 1.5 } };
  const calibrated = createAttention(spec, context(21)) as DotProductAttention;
  const plain = createAttention({ name: "mha" }, context(21)) as DotProductAttention;
  const x = new Rng(22).normalArray(2 * 6 * 8);
  await withScopeAsync(async () => {
    const input = Tensor.fromArray(backend, x, [2, 6, 8]);
    const training = await calibrated.forward(input).data();
    const reference = await plain.forward(input).data();
    assert.deepEqual(Array.from(training), Array.from(reference), "training forward unchanged");

    const evaluation = noGrad(() => calibrated.forwardWithProbs(input));
    const plainProbs = noGrad(() => plain.forwardWithProbs(input)).probs!;
    const probs = Float64Array.from(await evaluation.probs!.data());
    const before = await plainProbs.data();
    const t = 6;
    let changed = 0;
    for (let row = 0; row < probs.length / t; row++) {
      const sum = probs.slice(row * t, row * t + t).reduce((a: number, v: number) => a + v, 0);
      assert.ok(Math.abs(sum - 1) <= 1e-9, `row ${row} sums to ${sum}`);
      const i = row % t;
      for (let j = 1; j <= i; j++) {
        const p = before[row * t + j];
        if (p > 1.5 / (i + 1)) {
          changed++;
          assert.ok(probs[row * t + j] < p, `sink (${row}, ${j}) weight did not fall`);
        }
      }
    }
    assert.ok(changed > 0, "the random map has no sink above 1.5/N; choose another seed");
  });
  calibrated.dispose();
  plain.dispose();
});

Deno.test("act rejects sink variants", () => {
  const gated = createAttention({ name: "gated", calibrate: { enabled: true } }, context(1));
  assert.equal(gated.variant, "gated");
  gated.dispose();
  assert.throws(
    () => createAttention({ name: "sinkLogit", calibrate: { enabled: true } }, context(1)),
    /calibrate/,
  );
});
