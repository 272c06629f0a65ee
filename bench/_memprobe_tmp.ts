import { createWebGpuBackend } from "../kernels/webgpu/backend.ts";
import { createFastCpuBackend } from "../kernels/cpu/fast_backend.ts";
import { Rng } from "../tensor/mod.ts";
import { type GptSizes, runTinyStep, tinyGpt } from "./moelab.ts";
const kind = Deno.args[0];
const steps = Number(Deno.args[1] ?? 1000);
const gcEvery = Number(Deno.args[2] ?? 0);
const SIZES: GptSizes = { numLayers: 1, dModel: 32, numHeads: 2, seqLen: 16, batchSize: 2, vocabSize: 64, lr: 1e-3 };
const backend = kind === "cpu" ? createFastCpuBackend() : await createWebGpuBackend();
const gpt = tinyGpt(backend, SIZES);
const rng = new Rng(5);
const mib = (x: number) => (x / 2 ** 20).toFixed(1);
const t0 = performance.now();
for (let step = 1; step <= steps; step++) {
  const { loss, normSq } = runTinyStep(backend, gpt, rng, SIZES);
  backend.flush();
  if (step % 100 === 0 || step === 1) await loss.item();
  loss.dispose(); normSq.dispose();
  // deno-lint-ignore no-explicit-any
  if (gcEvery && step % gcEvery === 0) (globalThis as any).gc();
  if (step % 100 === 0 || step === 1) {
    const m = Deno.memoryUsage();
    console.log(`${kind} step ${step} rss ${mib(m.rss)} heapUsed ${mib(m.heapUsed)} heapTotal ${mib(m.heapTotal)} external ${mib(m.external)} t ${((performance.now()-t0)/1000).toFixed(0)}s bg ${kind==="cpu"?0:(backend as any).stats().bindGroupsCached}`);
  }
}
