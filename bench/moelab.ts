/**
 * moelab's own figures for `deno task bench`: matmul, attention forward + backward and the
 * tiny-GPT training step, on any backend.
 */

import type { Backend, Storage } from "../kernels/backend.ts";
import { DecoderLM } from "../layers/models/decoder_lm.ts";
import { AdamW } from "../optim/adamw.ts";
import { globalGradNorm, zeroGrad } from "../optim/clip.ts";
import {
  attention,
  backward,
  matmul,
  Rng,
  scale,
  softmax,
  sumAll,
  Tensor,
  withScope,
} from "../tensor/mod.ts";
import { time, type Timing, type TimingOptions } from "./timing.ts";

/** The tiny GPT every peer trains: 2 layers, dModel 128, 4 heads, T 128, batch 8, vocabulary 256. */
export const TINY_GPT = {
  numLayers: 2,
  dModel: 128,
  numHeads: 4,
  seqLen: 128,
  batchSize: 8,
  vocabSize: 256,
  lr: 1e-3,
} as const;

/** Matmuls chained per timed repetition, so one readback is a small part of the time. */
export function matmulsPerRepetition(n: number): number {
  if (n <= 128) return 64;
  if (n <= 256) return 16;
  if (n <= 512) return 4;
  return 1;
}

function randomStorage(backend: Backend, size: number, rng: Rng): Storage {
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = rng.normal();
  return backend.upload(data, "f32");
}

/** Times `matmulsPerRepetition(n)` products of two n×n matrices, then a readback of the last. */
export async function timeMatmul(
  backend: Backend,
  n: number,
  options: TimingOptions,
): Promise<Timing> {
  const rng = new Rng(n);
  const a = randomStorage(backend, n * n, rng);
  const b = randomStorage(backend, n * n, rng);
  const spec = {
    batch: 1,
    m: n,
    n,
    k: n,
    transA: false,
    transB: false,
    aBatched: true,
    bBatched: true,
  };
  const count = matmulsPerRepetition(n);
  const timing = await time(async () => {
    let last: Storage | null = null;
    for (let i = 0; i < count; i++) {
      if (last !== null) backend.release(last);
      last = backend.matmul(a, b, spec);
    }
    backend.flush();
    await backend.read(last!);
    backend.release(last!);
  }, options);
  backend.release(a);
  backend.release(b);
  return timing;
}

/**
 * Times causal self-attention forward and backward on [B, H, T, headDim] = [8, 4, 128, 32], the
 * tiny GPT's shapes: unfused (matmul, softmax, matmul) or through the backend's fused kernel.
 */
export async function timeAttention(
  backend: Backend,
  fused: boolean,
  options: TimingOptions,
): Promise<Timing> {
  const { batchSize, numHeads, seqLen, dModel } = TINY_GPT;
  const headDim = dModel / numHeads;
  const shape = [batchSize, numHeads, seqLen, headDim];
  const size = shape.reduce((p, d) => p * d, 1);
  const rng = new Rng(7);
  const inputs = [0, 1, 2].map(() => {
    const t = Tensor.fromStorage(backend, randomStorage(backend, size, rng), shape);
    t.requiresGrad = true;
    return t;
  });
  const [q, k, v] = inputs;

  const timing = await time(async () => {
    const dq = withScope(() => {
      const out = fused ? attention(q, k, v) : matmul(
        softmax(matmul(scale(q, 1 / Math.sqrt(headDim)), k, { transB: true }), {
          causal: true,
        }),
        v,
      );
      backward(sumAll(out));
      const grad = q.grad!.detach();
      for (const t of inputs) {
        t.grad?.dispose();
        t.grad = null;
      }
      return grad;
    });
    backend.flush();
    await backend.read(dq.storage);
    dq.dispose();
  }, options);
  for (const t of inputs) t.dispose();
  return timing;
}

export type GptSizes = { [K in keyof typeof TINY_GPT]: number };

/** Builds a GPT of `sizes` (default the tiny GPT) and its AdamW optimizer on `backend`. */
export function tinyGpt(
  backend: Backend,
  sizes: GptSizes = TINY_GPT,
): { model: DecoderLM; optimizer: AdamW } {
  const { numLayers, dModel, numHeads, seqLen, vocabSize, lr } = sizes;
  const model = new DecoderLM(backend, new Rng(0), {
    vocabSize,
    maxSeqLen: seqLen,
    dModel,
    numLayers,
    numHeads,
    dFF: 4 * dModel,
    mlp: "gelu",
    norm: "rmsnorm",
    position: "rope",
    tieEmbeddings: true,
    normEps: 1e-5,
    initStd: 0.02,
  });
  const optimizer = new AdamW(model.parameters(), {
    lr,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: 0.1,
  });
  return { model, optimizer };
}

/**
 * Runs one training step on random tokens, as the trainer's step does: forward, backward, global
 * gradient clipping at 1 and the AdamW update inside one scope. Returns the loss and squared
 * gradient norm, still on the device.
 */
export function runTinyStep(
  backend: Backend,
  gpt: { model: DecoderLM; optimizer: AdamW },
  rng: Rng,
  sizes: GptSizes = TINY_GPT,
): { loss: Tensor; normSq: Tensor } {
  const { batchSize, seqLen, vocabSize, lr } = sizes;
  const ids = Int32Array.from({ length: batchSize * seqLen }, () => rng.int(vocabSize));
  const targets = Int32Array.from({ length: batchSize * seqLen }, () => rng.int(vocabSize));
  const inputs = Tensor.fromArray(backend, ids, [batchSize, seqLen]);
  const labels = Tensor.fromArray(backend, targets, [batchSize, seqLen]);
  const params = [...gpt.model.parameters().values()];

  const result = withScope(() => {
    const loss = gpt.model.loss(inputs, labels);
    backward(loss);
    const { normSq, coefficient } = globalGradNorm(params, 1);
    gpt.optimizer.update(lr, coefficient);
    return { loss: loss.detach(), normSq };
  });
  inputs.dispose();
  labels.dispose();
  zeroGrad(params);
  return result;
}

/** Times one tiny-GPT training step, including the readback of its loss. */
export async function timeTrainStep(backend: Backend, options: TimingOptions): Promise<Timing> {
  const gpt = tinyGpt(backend);
  const rng = new Rng(3);
  const timing = await time(async () => {
    const { loss, normSq } = runTinyStep(backend, gpt, rng);
    backend.flush();
    await loss.item();
    loss.dispose();
    normSq.dispose();
  }, options);
  gpt.optimizer.dispose();
  gpt.model.dispose();
  return timing;
}
