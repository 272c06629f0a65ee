/**
 * The tiny-GPT training step on moelab's WebGPU backend against jax-js WebGPU and TensorFlow.js
 * WebGPU, interleaved: each round runs one step of each in turn, so a change in machine load
 * during the run hits all of them alike. Prints each one's ms per step as median (min–max) and
 * the median (min–max) of the per-round ratios peer / moelab. bench/main.ts times the same steps
 * one implementation after another.
 *
 * Run: npx deno run -A bench/step_pairs.ts [--rounds N] [--warmup N]   (defaults 9 and 2)
 */

import { createWebGpuBackend } from "../kernels/webgpu/backend.ts";
import { Rng } from "../tensor/mod.ts";
import { runTinyStep, TINY_GPT, tinyGpt } from "./moelab.ts";
import { createJaxStep, createTfStep, type PeerStep } from "./peer_step.ts";
import { reason } from "./peers.ts";
import { countFlag, formatSpread } from "./timing.ts";

const rounds = countFlag("--rounds", 9);
const warmup = countFlag("--warmup", 2);

const backend = await createWebGpuBackend();
const gpt = tinyGpt(backend);
const rng = new Rng(3);
const steps: [string, PeerStep][] = [[
  "moelab webgpu",
  {
    run: async () => {
      const { loss, normSq } = runTinyStep(backend, gpt, rng);
      backend.flush();
      await loss.item();
      loss.dispose();
      normSq.dispose();
    },
    dispose: () => {
      gpt.optimizer.dispose();
      gpt.model.dispose();
    },
  },
]];
for (
  const [label, create] of [
    ["jax-js webgpu", () => createJaxStep("webgpu")],
    ["tfjs webgpu", createTfStep],
  ] as [string, () => Promise<PeerStep | string>][]
) {
  try {
    const step = await create();
    if (typeof step === "string") console.log(`${label} absent: ${step}`);
    else steps.push([label, step]);
  } catch (error) {
    console.log(`${label} absent: ${reason(error)}`);
  }
}

console.log(
  `date ${new Date().toISOString()}; ${backend.description}; tiny GPT ` +
    `${TINY_GPT.batchSize}×${TINY_GPT.seqLen} tokens; ${warmup} warm-up rounds, ${rounds} counted`,
);
const samples = new Map<string, number[]>(steps.map(([label]) => [label, []]));
for (let round = 0; round < warmup + rounds; round++) {
  for (const [label, step] of steps) {
    const start = performance.now();
    await step.run();
    if (round >= warmup) samples.get(label)!.push(performance.now() - start);
  }
}

const tokens = TINY_GPT.batchSize * TINY_GPT.seqLen;
const moelab = samples.get("moelab webgpu")!;
console.log("| implementation | ms/step median (min–max) | tokens/s | peer / moelab per round |");
console.log("| --- | --- | --- | --- |");
for (const [label] of steps) {
  const times = samples.get(label)!;
  const ratios = label === "moelab webgpu"
    ? "-"
    : formatSpread(times.map((t, i) => t / moelab[i]), 2);
  const sorted = [...times].sort((a, b) => a - b);
  const tokensPerSecond = Math.round(tokens / (sorted[Math.floor(sorted.length / 2)] / 1000));
  console.log(`| ${label} | ${formatSpread(times, 1)} | ${tokensPerSecond} | ${ratios} |`);
}

for (const [, step] of steps) step.dispose();
await backend.dispose();
// TensorFlow.js and jax-js keep their own devices open; exit rather than wait for them.
Deno.exit(0);
