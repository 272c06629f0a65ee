/** Autograd behaviour: accumulation across backward calls, scopes, ignored targets, leaks. */

import assert from "node:assert/strict";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { DecoderLM } from "../../layers/models/decoder_lm.ts";
import {
  backward,
  crossEntropy,
  matmul,
  Rng,
  scale,
  ShapeError,
  sumAll,
  Tensor,
  withScope,
} from "../../tensor/mod.ts";

const backend = createCpuBackend({ precision: "f64" });

function tinyModel(seed: number): DecoderLM {
  return new DecoderLM(backend, new Rng(seed), {
    vocabSize: 256,
    maxSeqLen: 6,
    dModel: 8,
    numLayers: 1,
    numHeads: 2,
    dFF: 16,
    mlp: "gelu",
    norm: "rmsnorm",
    position: "rope",
    tieEmbeddings: true,
    normEps: 1e-5,
    initStd: 0.02,
  });
}

async function gradients(model: DecoderLM): Promise<Float64Array[]> {
  const out = [];
  for (const p of model.parameters().values()) out.push(Float64Array.from(await p.grad!.data()));
  return out;
}

Deno.test("micro-batches match one batch", async () => {
  const rng = new Rng(11);
  const ids = Int32Array.from({ length: 8 * 6 }, () => rng.int(256));
  const targets = Int32Array.from({ length: 8 * 6 }, () => rng.int(256));

  const whole = tinyModel(1);
  withScope(() => {
    backward(
      whole.loss(
        Tensor.fromArray(backend, ids, [8, 6]),
        Tensor.fromArray(backend, targets, [8, 6]),
      ),
    );
  });

  // Four micro-batches of two sequences, each loss weighted by its share of the tokens.
  const micro = tinyModel(1);
  for (let i = 0; i < 4; i++) {
    withScope(() => {
      const part = (a: Int32Array) =>
        Tensor.fromArray(backend, a.subarray(i * 12, (i + 1) * 12), [2, 6]);
      backward(scale(micro.loss(part(ids), part(targets)), 1 / 4));
    });
  }

  const a = await gradients(whole);
  const b = await gradients(micro);
  for (let p = 0; p < a.length; p++) {
    for (let j = 0; j < a[p].length; j++) {
      assert.ok(
        Math.abs(a[p][j] - b[p][j]) <= 1e-12,
        `parameter ${p} element ${j}: ${a[p][j]} vs ${b[p][j]}`,
      );
    }
  }
  whole.dispose();
  micro.dispose();
});

Deno.test("crossEntropy all ignored is zero", async () => {
  const logits = Tensor.fromArray(backend, new Rng(2).normalArray(12), [3, 4], "f32");
  logits.requiresGrad = true;
  const targets = Tensor.fromArray(backend, new Int32Array([-100, -100, -100]), [3]);
  const loss = crossEntropy(logits, targets);
  backward(loss);
  assert.equal(await loss.item(), 0);
  const grad = await logits.grad!.data();
  assert.ok(grad.every((g) => g === 0), `gradients ${[...grad]}`);
});

Deno.test("crossEntropy large logits stay finite", async () => {
  const logits = Tensor.fromArray(backend, [1000, 0], [1, 2], "f32");
  const targets = Tensor.fromArray(backend, new Int32Array([1]), [1]);
  const loss = await crossEntropy(logits, targets).item();
  assert.ok(Math.abs(loss - 1000) < 1e-9, `loss ${loss}`);
});

Deno.test("backward accumulates into grad", async () => {
  const x = Tensor.fromArray(backend, [1, 2, 3], [3], "f32");
  x.requiresGrad = true;
  backward(sumAll(scale(x, 2)));
  backward(sumAll(scale(x, 3)));
  assert.deepEqual([...(await x.grad!.data())], [5, 5, 5]);
});

Deno.test("scope releases intermediates", () => {
  const before = backend.liveStorages();
  const kept = withScope(() => {
    const a = Tensor.fromArray(backend, [1, 2, 3, 4], [2, 2], "f32");
    const b = matmul(a, a);
    return scale(b, 2);
  });
  assert.equal(backend.liveStorages(), before + 1);
  kept.dispose();
  assert.equal(backend.liveStorages(), before);
});

Deno.test("matmul shape error names both shapes", () => {
  const a = Tensor.zeros(backend, [2, 3]);
  const b = Tensor.zeros(backend, [4, 5]);
  assert.throws(() => matmul(a, b), (error: Error) => {
    assert.ok(error instanceof ShapeError);
    assert.match(error.message, /\[2, 3\]/);
    assert.match(error.message, /\[4, 5\]/);
    return true;
  });
});

Deno.test("reshape shares storage and frees once", () => {
  const before = backend.liveStorages();
  const a = Tensor.fromArray(backend, [1, 2, 3, 4], [4], "f32");
  const b = a.reshape([2, 2]);
  a.dispose();
  assert.equal(backend.liveStorages(), before + 1);
  b.dispose();
  assert.equal(backend.liveStorages(), before);
});
