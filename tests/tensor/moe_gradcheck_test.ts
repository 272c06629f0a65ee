/**
 * Finite-difference gradient checks of the MoE ops and of a whole MoE layer, through router and
 * expert weights, on the float64 CPU backend.
 */

import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { MoeLayer, type MoeLayerOptions } from "../../layers/moe/moe_layer.ts";
import { resolveMoe } from "../../layers/moe/spec.ts";
import type { RouterSpec } from "../../layers/moe/routers/mod.ts";
import * as T from "../../tensor/mod.ts";
import { Rng, Tensor } from "../../tensor/mod.ts";
import { gradcheck } from "../helpers/gradcheck.ts";

const backend = createCpuBackend({ precision: "f64" });

/** Values whose gaps are far larger than the finite-difference step, so selections are stable. */
function distinct(n: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const order = Array.from({ length: n }, (_, i) => i).sort(() => rng.uniform() - 0.5);
  return Float64Array.from(order, (r) => r * 0.1 + rng.uniform() * 0.01);
}

function ints(values: number[]): Tensor {
  return Tensor.fromArray(backend, Int32Array.from(values), [values.length], "i32");
}

Deno.test("gradcheck topK values", async () => {
  await gradcheck(
    backend,
    "topK",
    [{ shape: [3, 5], values: distinct(15, 1) }],
    (x) => T.topK(x, 2).values,
  );
});

Deno.test("gradcheck gatherColumns with empty index", async () => {
  const indices = Tensor.fromArray(backend, Int32Array.from([2, 0, -1, 4, 4, 1]), [3, 2], "i32");
  await gradcheck(
    backend,
    "gatherColumns",
    [{ shape: [3, 5] }],
    (x) => T.gatherColumns(x, indices),
  );
});

Deno.test("gradcheck gatherRows scatter and inverse", async () => {
  const repeated = ints([2, 0, 2, -1, 1]);
  await gradcheck(backend, "scatter path", [{ shape: [3, 4] }], (x) => T.gatherRows(x, repeated));
  const index = ints([3, -1, 0, 1]);
  const inverse = ints([2, 3, -1, 0]);
  await gradcheck(
    backend,
    "inverse path",
    [{ shape: [4, 2] }],
    (x) => T.gatherRows(x, index, { inverse }),
  );
});

Deno.test("gradcheck scatterAddRows", async () => {
  const index = ints([1, 1, -1, 0, 3]);
  await gradcheck(
    backend,
    "scatterAddRows",
    [{ shape: [5, 3] }],
    (x) => T.scatterAddRows(x, index, 4),
  );
});

Deno.test("gradcheck groupedMatmul empty groups and tail", async () => {
  // 7 rows: expert 0 gets 3, expert 1 none, expert 2 gets 3, and row 6 is past the last group.
  const offsets = ints([0, 3, 3, 6]);
  await gradcheck(
    backend,
    "groupedMatmul",
    [{ shape: [7, 5] }, { shape: [3, 4, 5] }],
    (x, w) => T.groupedMatmul(x, w, offsets),
  );
  const allFirst = ints([0, 4, 4, 4]);
  await gradcheck(
    backend,
    "every row to expert 0",
    [{ shape: [4, 3] }, { shape: [3, 2, 3] }],
    (x, w) => T.groupedMatmul(x, w, allFirst),
  );
});

function layerOptions(router: RouterSpec, extra: Partial<MoeLayerOptions> = {}): MoeLayerOptions {
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
    ...extra,
  };
}

/**
 * Checks d(output + aux loss) by x, the router weight and every expert weight, swapping the
 * checked tensors into the layer for each evaluation.
 */
async function checkLayer(name: string, options: MoeLayerOptions, seed: number): Promise<void> {
  const layer = new MoeLayer(backend, new Rng(seed), options);
  const router = layer.router as unknown as { weight: Tensor };
  const experts = layer.experts;
  const shapes = [
    [2, 3, options.dModel],
    [...router.weight.shape],
    [...experts.up.shape],
    [...experts.gate!.shape],
    [...experts.down.shape],
  ];
  await gradcheck(
    backend,
    name,
    shapes.map((shape) => ({ shape })),
    (x, weight, up, gate, down) => {
      Object.assign(router, { weight });
      Object.assign(experts, { up, gate, down });
      const { y, auxLoss } = layer.forward(x);
      return auxLoss === null ? y : T.add(y, auxLoss);
    },
    { seed, tolerance: 1e-5 },
  );
  layer.dispose();
}

Deno.test("gradcheck moe layer softmax-topk", async () => {
  await checkLayer("softmax-topk", layerOptions({ name: "softmax-topk" }), 3);
});

Deno.test("gradcheck moe layer with capacity drops", async () => {
  const options = layerOptions({ name: "softmax-topk" }, {
    capacityFactor: 0.5,
    dropPolicy: "probability",
  });
  await checkLayer("capacity", options, 4);
});

Deno.test("gradcheck moe layer aux-free sigmoid", async () => {
  await checkLayer("aux-free", layerOptions({ name: "aux-free" }), 5);
});

Deno.test("gradcheck moe layer expert-choice", async () => {
  await checkLayer("expert-choice", layerOptions({ name: "expert-choice", capacityFactor: 1 }), 6);
});
