/** Times the quickstart training step on a backend and the matmuls inside it. */
import { createWebGpuBackend } from "../kernels/webgpu/backend.ts";
import { createCpuBackend } from "../kernels/cpu/backend.ts";
import { DecoderLM } from "../layers/models/decoder_lm.ts";
import { createOptimizer } from "../optim/create.ts";
import { Rng, Tensor } from "../tensor/mod.ts";
import { trainStep } from "../experiments/trainer.ts";

const which = Deno.args[0] ?? "webgpu";
const backend = which === "cpu" ? createCpuBackend() : await createWebGpuBackend();
const [B, T, d, L] = (Deno.args[1] ?? "16,64,96,3").split(",").map(Number);
const model = new DecoderLM(backend, new Rng(0), {
  vocabSize: 256,
  maxSeqLen: T,
  dModel: d,
  numLayers: L,
  numHeads: 4,
  dFF: 4 * d,
  mlp: "gelu",
  norm: "rmsnorm",
  position: "rope",
  tieEmbeddings: true,
  normEps: 1e-5,
  initStd: 0.02,
});
const { optimizer: opt } = createOptimizer(model.parameters(), { name: "adamw", lr: 1e-3 });
const rng = new Rng(1);
const times = [];
for (let i = 0; i < 6; i++) {
  const ids = Int32Array.from({ length: B * T }, () => rng.int(256));
  const t0 = performance.now();
  const { loss, normSq } = trainStep(
    model,
    opt,
    {
      inputs: Tensor.fromArray(backend, ids, [B, T]),
      targets: Tensor.fromArray(backend, ids, [B, T]),
    },
    1,
    1,
  );
  await loss.item();
  times.push(performance.now() - t0);
  loss.dispose();
  normSq.dispose();
}
// deno-lint-ignore no-explicit-any
const stats = (backend as any).stats?.();
console.log(
  which,
  `B${B} T${T} d${d} L${L}`,
  "ms/step",
  times.map((t) => t.toFixed(0)).join(" "),
  JSON.stringify(stats),
);
await backend.dispose();
