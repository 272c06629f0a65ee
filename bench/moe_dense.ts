/**
 * The MoE layer's forward + backward through its grouped path (sort by expert, grouped matrix
 * products, scatter-add) against the same layer computed as a dense loop over experts, where
 * every expert runs on every token and its output is masked by the token's combine weight.
 *
 * Both paths share the router, the expert weights and the softmax top-K weights (renormalize off,
 * so the dense weight of expert e is p_e where e is among the token's top K and 0 elsewhere), and
 * the script checks that their outputs agree before timing. Figures exclude 2 warm-up runs and
 * report the median of `--repetitions` runs (default 5) with the min–max spread.
 *
 * Run: npx deno run -A bench/moe_dense.ts [--repetitions N] [--backend webgpu|cpu]
 */

import type { Backend } from "../kernels/backend.ts";
import { createCpuBackend } from "../kernels/cpu/backend.ts";
import { createWebGpuBackend } from "../kernels/webgpu/backend.ts";
import { stepAtLeast } from "../layers/moe/concept.ts";
import { MoeLayer } from "../layers/moe/moe_layer.ts";
import { resolveMoe } from "../layers/moe/spec.ts";
import {
  add,
  backward,
  gelu,
  matmul,
  mul,
  noGrad,
  Rng,
  slice,
  sub,
  sumAll,
  Tensor,
  topK,
  withScope,
} from "../tensor/mod.ts";
import { time } from "./timing.ts";

const TOKENS = 1024;
const D_MODEL = 128;
const EXPERT_DFF = 256;
const TOP_K = 2;

const args = Deno.args;
const repetitionsFlag = args.indexOf("--repetitions");
const repetitions = repetitionsFlag < 0 ? 5 : Number(args[repetitionsFlag + 1]);
if (!Number.isInteger(repetitions) || repetitions < 1) {
  throw new Error(`--repetitions is ${args[repetitionsFlag + 1]}; give a whole count ≥ 1`);
}
const backendFlag = args.indexOf("--backend");
const backendName = backendFlag < 0 ? "webgpu" : args[backendFlag + 1];
if (backendName !== "webgpu" && backendName !== "cpu") {
  throw new Error(`--backend is ${backendName}; choose webgpu or cpu`);
}

function createLayer(backend: Backend, numExperts: number): MoeLayer {
  const router = { name: "softmax-topk", renormalize: false };
  return new MoeLayer(backend, new Rng(3), {
    ...resolveMoe({ layers: "all", router, numExperts, topK: TOP_K, dFF: EXPERT_DFF }),
    dModel: D_MODEL,
    router,
    initStd: 0.02,
    outputInitStd: 0.02,
    vocabSize: null,
  });
}

/** The layer's output with every expert applied to every token, masked by its combine weight. */
function denseForward(layer: MoeLayer, x: Tensor): Tensor {
  const numExperts = layer.options.routedExperts;
  const plan = layer.router.route({ x, batch: 1, seqLen: x.shape[0], tokenIds: null });
  const probs = plan.probs!;
  const kth = slice(topK(probs, TOP_K).values, 1, TOP_K - 1, TOP_K);
  const mask = noGrad(() => stepAtLeast(sub(probs, kth)));
  const weights = mul(probs, mask);

  const { up, down } = layer.experts;
  let y: Tensor | null = null;
  for (let e = 0; e < numExperts; e++) {
    const upE = slice(up, 0, e, e + 1).reshape([EXPERT_DFF, D_MODEL]);
    const downE = slice(down, 0, e, e + 1).reshape([D_MODEL, EXPERT_DFF]);
    const out = matmul(gelu(matmul(x, upE, { transB: true })), downE, { transB: true });
    const masked = mul(out, slice(weights, 1, e, e + 1));
    y = y === null ? masked : add(y, masked);
  }
  return y!;
}

async function measure(backend: Backend, numExperts: number) {
  const layer = createLayer(backend, numExperts);
  const rng = new Rng(5);
  const x = Tensor.fromArray(backend, rng.normalArray(TOKENS * D_MODEL), [TOKENS, D_MODEL], "f32");
  x.requiresGrad = true;
  const projection = Tensor.fromArray(
    backend,
    rng.normalArray(TOKENS * D_MODEL),
    [TOKENS, D_MODEL],
    "f32",
  );
  x.persistent = true;
  projection.persistent = true;

  const difference = await withScope(() =>
    noGrad(() => {
      const grouped = layer.forward(x).y;
      return sumAll(mul(sub(grouped, denseForward(layer, x)), sub(grouped, denseForward(layer, x))))
        .detach();
    })
  ).item();

  const step = (dense: boolean) => async () => {
    const grad = withScope(() => {
      const y = dense ? denseForward(layer, x) : layer.forward(x).y;
      backward(sumAll(mul(y, projection)));
      const dx = x.grad!.detach();
      x.grad?.dispose();
      x.grad = null;
      for (const p of layer.parameters().values()) {
        p.grad?.dispose();
        p.grad = null;
      }
      return dx;
    });
    backend.flush();
    await backend.read(grad.storage);
    grad.dispose();
  };
  const grouped = await time(step(false), { warmup: 2, repetitions });
  const dense = await time(step(true), { warmup: 2, repetitions });
  x.dispose();
  projection.dispose();
  layer.dispose();
  return { grouped, dense, rmsDifference: Math.sqrt(difference / (TOKENS * D_MODEL)) };
}

const backend = backendName === "webgpu" ? await createWebGpuBackend() : createCpuBackend();
const format = (t: { median: number; min: number; max: number }) =>
  `${t.median.toFixed(2)} (${t.min.toFixed(2)}–${t.max.toFixed(2)})`;
console.log(
  `${backendName}: ${TOKENS} tokens, dModel ${D_MODEL}, expert dFF ${EXPERT_DFF}, top-${TOP_K}`,
);
console.log("| experts | grouped ms | dense loop ms | dense / grouped | rms difference |");
console.log("| ------- | ---------- | ------------- | --------------- | -------------- |");
for (const numExperts of [4, 8, 16]) {
  const { grouped, dense, rmsDifference } = await measure(backend, numExperts);
  console.log(
    `| ${numExperts} | ${format(grouped)} | ${format(dense)} | ` +
      `${(dense.median / grouped.median).toFixed(2)} | ${rmsDifference.toExponential(1)} |`,
  );
}
backend.dispose();
