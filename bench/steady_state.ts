/**
 * Checks that training reaches a steady state on the WebGPU backend. After the first step no new
 * GPU buffers are created, each step submits once, only the logged loss is read back, and the
 * live-storage count and the process's resident memory stay flat. Each checkpoint line also
 * prints the cached bind groups and the V8 heap and external bytes, which tell growth in the V8
 * heap from growth in native memory. It is not a test: it runs 1000
 * steps of a small GPT and prints one line per checkpoint, then PASS or FAIL per check.
 *
 * Run: npx deno run -A bench/steady_state.ts [steps] [logEvery]
 */

import { createWebGpuBackend, type WebGpuBackend } from "../kernels/webgpu/backend.ts";
import { Rng } from "../tensor/mod.ts";
import { type GptSizes, runTinyStep, tinyGpt } from "./moelab.ts";

const steps = Number(Deno.args[0] ?? 1000);
const logEvery = Number(Deno.args[1] ?? 100);
/** Small enough that 1000 steps finish in minutes on a software adapter. */
const SIZES: GptSizes = {
  numLayers: 1,
  dModel: 32,
  numHeads: 2,
  seqLen: 16,
  batchSize: 2,
  vocabSize: 64,
  lr: 1e-3,
};

const backend: WebGpuBackend = await createWebGpuBackend();
const gpt = tinyGpt(backend, SIZES);
const rng = new Rng(5);
console.log(`steady state: ${steps} steps on ${backend.description}, loss read every ${logEvery}`);

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
let afterFirst = { buffersCreated: 0, live: 0, rss: 0 };
const unloggedSubmits = new Set<number>();
let maxRssGrowth = 0;
for (let step = 1; step <= steps; step++) {
  const before = backend.stats();
  const { loss, normSq } = runTinyStep(backend, gpt, rng, SIZES);
  backend.flush();
  const logs = step % logEvery === 0 || step === 1;
  if (!logs) unloggedSubmits.add(backend.stats().submits - before.submits);
  let lossValue = NaN;
  if (logs) lossValue = await loss.item();
  loss.dispose();
  normSq.dispose();

  const stats = backend.stats();
  const { rss, heapUsed, external } = Deno.memoryUsage();
  if (step === 1) {
    afterFirst = { buffersCreated: stats.buffersCreated, live: backend.liveStorages(), rss };
  }
  if (step > 1) maxRssGrowth = Math.max(maxRssGrowth, rss - afterFirst.rss);
  if (logs) {
    console.log(
      `step ${step} loss ${lossValue.toFixed(4)} buffersCreated ${stats.buffersCreated} ` +
        `live ${backend.liveStorages()} bindGroups ${stats.bindGroupsCached} ` +
        `rss ${mib(rss)} heapUsed ${mib(heapUsed)} external ${mib(external)} MiB`,
    );
  }
}

const final = backend.stats();
const checks = [
  [
    `no buffers created after step 1 (${afterFirst.buffersCreated} → ${final.buffersCreated})`,
    final.buffersCreated === afterFirst.buffersCreated,
  ],
  [
    `live storages flat (${afterFirst.live} → ${backend.liveStorages()})`,
    backend.liveStorages() === afterFirst.live,
  ],
  [
    `one submit per unlogged step (seen: ${[...unloggedSubmits].join(", ")})`,
    unloggedSubmits.size === 1 && unloggedSubmits.has(1),
  ],
  [
    `rss growth after step 1 at most 32 MiB (max ${(maxRssGrowth / 2 ** 20).toFixed(1)} MiB)`,
    maxRssGrowth <= 32 * 2 ** 20,
  ],
] as const;
for (const [label, ok] of checks) console.log(`${ok ? "PASS" : "FAIL"} ${label}`);
gpt.optimizer.dispose();
gpt.model.dispose();
await backend.dispose();
