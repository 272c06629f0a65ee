/**
 * Per-op wall time of the tiny-GPT training step on the fast CPU backend: every backend method is
 * wrapped and its time summed over the counted steps, so the hot ops show before any is tuned.
 *
 * Run: npx deno run -A bench/op_profile.ts [--steps N] [--threads 1|2] [--pair-threads]
 *   --steps: counted steps after 2 warm-up steps (default 5)
 *   --threads: the fast backend's matmulThreads (default: its own default)
 *   --pair-threads: instead of the profile, time steps on matmulThreads 1 and 2 in turn (3
 *     warm-up steps each, then --steps pairs) and print both medians and the median of the
 *     per-pair ratio, so a change in machine load hits both alike
 */

import type { Backend } from "../kernels/backend.ts";
import { createFastCpuBackend } from "../kernels/cpu/fast_backend.ts";
import { Rng } from "../tensor/mod.ts";
import { runTinyStep, tinyGpt } from "./moelab.ts";

/** Per-method totals in ms and call counts, keyed by method name (binary and unary by op too). */
interface OpTotals {
  ms: number;
  calls: number;
}

/** Wraps every method of `backend` so each call adds its wall time to `totals`. */
function profiled(backend: Backend, totals: Map<string, OpTotals>): Backend {
  return new Proxy(backend, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== "function" || typeof property !== "string") return value;
      return (...args: unknown[]) => {
        // unary, unaryBackward and binary are split by op name, since each op is its own loop.
        const label = property.startsWith("unary") || property === "binary"
          ? `${property} ${args[0]}`
          : property;
        const start = performance.now();
        const result = value.apply(target, args);
        const entry = totals.get(label) ?? { ms: 0, calls: 0 };
        entry.ms += performance.now() - start;
        entry.calls++;
        totals.set(label, entry);
        return result;
      };
    },
  });
}

const stepsFlag = Deno.args.indexOf("--steps");
const steps = stepsFlag < 0 ? 5 : Number(Deno.args[stepsFlag + 1]);
if (!Number.isInteger(steps) || steps < 1) {
  throw new Error(`--steps is ${Deno.args[stepsFlag + 1]}; give a whole count ≥ 1`);
}

const threadsFlag = Deno.args.indexOf("--threads");
const threads = threadsFlag < 0 ? undefined : Number(Deno.args[threadsFlag + 1]);
if (threads !== undefined && threads !== 1 && threads !== 2) {
  throw new Error(`--threads is ${Deno.args[threadsFlag + 1]}; give 1 or 2`);
}

if (Deno.args.includes("--pair-threads")) {
  await pairThreads(steps);
  Deno.exit(0);
}

/** Times tiny-GPT steps on one and two matmul threads in turn and prints the paired ratio. */
async function pairThreads(pairs: number): Promise<void> {
  const arms = ([1, 2] as const).map((matmulThreads) => {
    const armBackend = createFastCpuBackend({ matmulThreads });
    return {
      matmulThreads,
      armBackend,
      gpt: tinyGpt(armBackend),
      rng: new Rng(3),
      ms: [] as number[],
    };
  });
  const timeStep = async (arm: typeof arms[number]) => {
    const start = performance.now();
    const { loss, normSq } = runTinyStep(arm.armBackend, arm.gpt, arm.rng);
    await loss.item();
    loss.dispose();
    normSq.dispose();
    return performance.now() - start;
  };

  for (let i = 0; i < 3; i++) for (const arm of arms) await timeStep(arm);
  // Alternate which arm goes first, so neither always runs right after the other's garbage.
  for (let i = 0; i < pairs; i++) {
    for (const arm of i % 2 ? arms : [...arms].reverse()) arm.ms.push(await timeStep(arm));
  }

  const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];
  for (const arm of arms) {
    console.log(`matmulThreads ${arm.matmulThreads}: median ${median(arm.ms).toFixed(1)} ms/step`);
  }
  const ratios = arms[1].ms.map((ms, i) => ms / arms[0].ms[i]);
  console.log(`${pairs} pairs: 2 threads / 1 thread, median ${median(ratios).toFixed(3)}`);
}

const totals = new Map<string, OpTotals>();
const backend = profiled(createFastCpuBackend({ matmulThreads: threads }), totals);
const gpt = tinyGpt(backend);
const rng = new Rng(3);

async function step(): Promise<number> {
  const start = performance.now();
  const { loss, normSq } = runTinyStep(backend, gpt, rng);
  await loss.item();
  loss.dispose();
  normSq.dispose();
  return performance.now() - start;
}

for (let i = 0; i < 2; i++) await step();
totals.clear();
const stepMs: number[] = [];
for (let i = 0; i < steps; i++) stepMs.push(await step());

const sorted = [...stepMs].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)];
let opMs = 0;
for (const { ms } of totals.values()) opMs += ms;
console.log(
  `${steps} steps: median ${median.toFixed(1)} ms (min ${sorted[0].toFixed(1)}, max ` +
    `${sorted[sorted.length - 1].toFixed(1)}); backend ops ${(opMs / steps).toFixed(1)} ms/step`,
);
console.log("| op | ms/step | share | calls/step |\n| --- | --- | --- | --- |");
for (const [label, { ms, calls }] of [...totals].sort((a, b) => b[1].ms - a[1].ms)) {
  if (ms / steps < 0.05) continue;
  const share = ((100 * ms) / opMs).toFixed(1);
  console.log(`| ${label} | ${(ms / steps).toFixed(1)} | ${share}% | ${calls / steps} |`);
}

gpt.optimizer.dispose();
gpt.model.dispose();
await backend.dispose();
