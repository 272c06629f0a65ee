import { createWebGpuBackend } from "../kernels/webgpu/backend.ts";
import { Rng } from "../tensor/mod.ts";
import { runTinyStep, tinyGpt, TINY_GPT } from "../bench/moelab.ts";
const small = Deno.args[0] === "small";
const SIZES = small ? { numLayers: 1, dModel: 32, numHeads: 2, seqLen: 16, batchSize: 2, vocabSize: 64, lr: 1e-3 } : TINY_GPT;
const backend = await createWebGpuBackend();
const gpt = tinyGpt(backend, SIZES);
const rng = new Rng(5);
for (let step = 1; step <= Number(Deno.args[1]); step++) {
  const before = backend.stats().dispatches;
  const { loss, normSq } = runTinyStep(backend, gpt, rng, SIZES);
  backend.flush(); await loss.item(); loss.dispose(); normSq.dispose();
  const s = backend.stats();
  if (step <= 5 || step % 10 === 0) console.log(step, "dispatches/step", s.dispatches - before, "bg", s.bindGroupsCached);
}
