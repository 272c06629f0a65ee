/**
 * Finite-difference gradient checks of MoE layers with the Graph-of-Tokens routers (similarity
 * and attention) and the segment router, through x, the router weight, the attention
 * probabilities and every expert weight, on the float64 CPU backend.
 */

import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { MoeLayer, type MoeLayerOptions } from "../../layers/moe/moe_layer.ts";
import type { RouterSpec } from "../../layers/moe/routers/mod.ts";
import { resolveMoe } from "../../layers/moe/spec.ts";
import * as T from "../../tensor/mod.ts";
import { Rng, type Tensor } from "../../tensor/mod.ts";
import { gradcheck, type GradcheckInput } from "../helpers/gradcheck.ts";

const backend = createCpuBackend({ precision: "f64" });
const BATCH = 2;
const SEQ_LEN = 3;
const HEADS = 2;

function layerOptions(router: RouterSpec): MoeLayerOptions {
  return {
    ...resolveMoe({
      layers: "all",
      router,
      numExperts: 4,
      topK: 2,
      dFF: 6,
      ffn: "swiglu",
      auxLossWeight: 0.1,
      zLossWeight: 0.01,
    }),
    dModel: 5,
    router,
    initStd: 0.5,
    outputInitStd: 0.5,
    vocabSize: null,
  };
}

/** Positive scores [B, H, T, T]; the router normalises the mixed rows, so rows need not sum to 1. */
function attentionScores(seed: number): Float64Array {
  const rng = new Rng(seed);
  return Float64Array.from(
    { length: BATCH * HEADS * SEQ_LEN * SEQ_LEN },
    () => 0.2 + rng.uniform(),
  );
}

/**
 * Checks d(output + aux loss) by x, the router weight and the expert weights (and by the
 * attention probabilities when `withProbs`), swapping the checked tensors into the layer.
 */
async function checkLayer(router: RouterSpec, seed: number, withProbs: boolean): Promise<void> {
  const options = layerOptions(router);
  const layer = new MoeLayer(backend, new Rng(seed), options);
  const routerModule = layer.router as unknown as { weight: Tensor };
  const experts = layer.experts;
  const inputs: GradcheckInput[] = [
    { shape: [BATCH, SEQ_LEN, options.dModel] },
    { shape: [...routerModule.weight.shape] },
    { shape: [...experts.up.shape] },
    { shape: [...experts.gate!.shape] },
    { shape: [...experts.down.shape] },
  ];
  if (withProbs) {
    inputs.push({ shape: [BATCH, HEADS, SEQ_LEN, SEQ_LEN], values: attentionScores(seed) });
  }
  await gradcheck(
    backend,
    router.name,
    inputs,
    (x, weight, up, gate, down, probs) => {
      Object.assign(routerModule, { weight });
      Object.assign(experts, { up, gate, down });
      const { y, auxLoss } = layer.forward(x, { tokenIds: null, attentionProbs: probs ?? null });
      return auxLoss === null ? y : T.add(y, auxLoss);
    },
    { seed, tolerance: 1e-5 },
  );
  layer.dispose();
}

Deno.test("gradcheck moe layer similarity prob mix", async () => {
  await checkLayer({ name: "similarity" }, 3, false);
});

Deno.test("gradcheck moe layer similarity logit mix raw weights", async () => {
  await checkLayer(
    { name: "similarity", mix: "logit", weightsFrom: "raw", similarity: "dot", temperature: 0.5 },
    4,
    false,
  );
});

Deno.test("gradcheck moe layer attention mean of heads", async () => {
  await checkLayer({ name: "attention" }, 5, true);
});

Deno.test("gradcheck moe layer attention one head logit mix", async () => {
  await checkLayer({ name: "attention", head: 1, mix: "logit" }, 6, true);
});

Deno.test("gradcheck moe layer segment padded", async () => {
  await checkLayer({ name: "segment", segmentLength: 2 }, 7, false);
});
