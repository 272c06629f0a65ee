/**
 * `deno task bench`: moelab's WebGPU and CPU backends against jax-js, TensorFlow.js and PyTorch
 * CPU on matmul (64–1024), causal attention forward + backward, and the tiny-GPT training step,
 * all in this one process except PyTorch, which runs bench/torch_step.py with one thread. The
 * step's jax-js and TensorFlow.js versions are in bench/peer_step.ts.
 *
 * Every figure excludes warm-up runs and reports the median of `--repetitions` (default 5) runs
 * with the min–max spread. Prints a markdown table for docs/BENCHMARKS.md.
 *
 * Run: npx deno task bench [--repetitions N] [--quick]
 *   --quick measures matmul 512 and the training step only.
 * Without --quick it then runs bench/attention_memory.ts (fused against unfused attention at
 * T = 64, 256 and 1024, with peak bytes), bench/moe_dense.ts (the MoE layer's grouped path
 * against a dense loop over 4, 8 and 16 experts), and the step comparisons taken in turns, so
 * that load changes hit both sides alike: bench/step_pairs.ts (moelab WebGPU against jax-js and
 * TensorFlow.js) and bench/cpu_pairs.ts (moelab's fast CPU backend against PyTorch).
 */

import type { Backend } from "../kernels/backend.ts";
import { createCpuBackend } from "../kernels/cpu/backend.ts";
import { createFastCpuBackend } from "../kernels/cpu/fast_backend.ts";
import { createWebGpuBackend } from "../kernels/webgpu/backend.ts";
import { matmulsPerRepetition, timeAttention, timeMatmul, timeTrainStep } from "./moelab.ts";
import { jaxTrainStep, tfTrainStep } from "./peer_step.ts";
import { jaxMatmul, type PeerResult, tfMatmul } from "./peers.ts";
import { gflops, medianMinMax, type Timing } from "./timing.ts";

const args = Deno.args;
const repetitionsFlag = args.indexOf("--repetitions");
const repetitions = repetitionsFlag < 0 ? 5 : Number(args[repetitionsFlag + 1]);
if (!Number.isInteger(repetitions) || repetitions < 1) {
  throw new Error(`--repetitions is ${args[repetitionsFlag + 1]}; give a whole count ≥ 1`);
}
const quick = args.includes("--quick");
const options = { warmup: 2, repetitions };
/** A peer that has not finished one figure in this long is reported as timed out. */
const PEER_TIMEOUT_MS = 180_000;

const rows: string[] = [];
function row(cells: (string | number)[]): void {
  const line = `| ${cells.join(" | ")} |`;
  rows.push(line);
  console.log(line);
}

function spread(median: number, min: number, max: number, digits: number): string {
  return `${median.toFixed(digits)} (${min.toFixed(digits)}–${max.toFixed(digits)})`;
}

function withTimeout(promise: Promise<PeerResult>, label: string): Promise<PeerResult> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<PeerResult>((resolve) => {
    timer = setTimeout(
      () => resolve({ absent: `${label} timed out after ${PEER_TIMEOUT_MS / 1000} s` }),
      PEER_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function webgpuOrNull(): Promise<Backend | null> {
  try {
    return await createWebGpuBackend();
  } catch (error) {
    console.log(`webgpu backend absent: ${error instanceof Error ? error.message : error}`);
    return null;
  }
}

const webgpu = await webgpuOrNull();
const moelab: [string, Backend][] = [
  ...(webgpu ? [["moelab webgpu", webgpu] as [string, Backend]] : []),
  ["moelab cpu (fast)", createFastCpuBackend()],
  ["moelab cpu (reference f32)", createCpuBackend({ precision: "f32" })],
];
console.log(`date ${new Date().toISOString()}; ${moelab.map(([, b]) => b.description).join("; ")}`);

// --- matmul -------------------------------------------------------------------------------------

console.log("\n| matmul n×n×n | implementation | GFLOP/s median (min–max) |\n| --- | --- | --- |");
for (const n of quick ? [512] : [64, 256, 512, 1024]) {
  const flops = 2 * n ** 3;
  const perRep = (t: Timing, count: number) => gflops(t, flops * count);
  const count = matmulsPerRepetition(n);
  for (const [label, backend] of moelab) {
    // The reference backend takes seconds per product past 256; its figure is not the point.
    if (label.includes("reference") && n > 512) continue;
    const g = perRep(await timeMatmul(backend, n, options), count);
    row([n, label, spread(g.median, g.min, g.max, 1)]);
  }
  const peers: [string, () => Promise<PeerResult>][] = [
    ["jax-js webgpu", () => jaxMatmul("webgpu", n, options)],
    ["jax-js wasm", () => jaxMatmul("wasm", n, options)],
    ["tfjs webgpu", () => tfMatmul(n, options)],
  ];
  for (const [label, run] of peers) {
    const result = await withTimeout(run(), `${label} matmul ${n}`);
    if ("absent" in result) row([n, label, `absent: ${result.absent}`]);
    else {
      const g = perRep(result.timing, count);
      row([n, label, spread(g.median, g.min, g.max, 1)]);
    }
  }
}

// --- attention ----------------------------------------------------------------------------------

if (!quick) {
  console.log(
    "\n| attention fwd+bwd [8,4,128,32] | implementation | ms median (min–max) |\n| --- | --- | --- |",
  );
  for (const [label, backend] of moelab) {
    if (label.includes("reference")) continue;
    const unfused = await timeAttention(backend, false, options);
    row(["unfused", label, spread(unfused.median, unfused.min, unfused.max, 1)]);
    if (typeof backend.attention === "function") {
      const fused = await timeAttention(backend, true, options);
      row(["fusedAttention", label, spread(fused.median, fused.min, fused.max, 1)]);
    }
  }
}

// --- training step ------------------------------------------------------------------------------

console.log(
  "\n| tiny-GPT step | implementation | ms/step median (min–max) | tokens/s |\n| --- | --- | --- | --- |",
);
const tokens = 8 * 128;
const stepMedians = new Map<string, number>();
for (const [label, backend] of moelab) {
  if (label.includes("reference")) continue;
  const t = await timeTrainStep(backend, options);
  stepMedians.set(label, t.median);
  row(["step", label, spread(t.median, t.min, t.max, 1), Math.round(tokens / (t.median / 1000))]);
}
const stepPeers: [string, () => Promise<PeerResult>][] = [
  ["jax-js webgpu", () => jaxTrainStep("webgpu", options)],
  ["jax-js wasm", () => jaxTrainStep("wasm", options)],
  ["tfjs webgpu", () => tfTrainStep(options)],
];
for (const [label, run] of stepPeers) {
  const result = await withTimeout(run(), `${label} step`);
  if ("absent" in result) row(["step", label, `absent: ${result.absent}`, "-"]);
  else {
    const t = result.timing;
    stepMedians.set(label, t.median);
    row(["step", label, spread(t.median, t.min, t.max, 1), Math.round(tokens / (t.median / 1000))]);
  }
}
const torch = await torchStep();
if (typeof torch === "string") row(["step", "pytorch cpu (1 thread)", `absent: ${torch}`, "-"]);
else {
  row([
    "step",
    "pytorch cpu (1 thread)",
    spread(torch.median, torch.min, torch.max, 1),
    Math.round(tokens / (torch.median / 1000)),
  ]);
}

const moelabStep = stepMedians.get("moelab webgpu");
if (moelabStep !== undefined) {
  for (const peer of ["jax-js webgpu", "tfjs webgpu"]) {
    const peerStep = stepMedians.get(peer);
    if (peerStep === undefined) continue;
    console.log(`step: ${peer} / moelab webgpu = ${(peerStep / moelabStep).toFixed(2)} (medians)`);
  }
}

/** Runs bench/torch_step.py with one thread; returns its timing or why it could not run. */
async function torchStep(): Promise<Timing | string> {
  // Debian's python3-torch lives in /usr/bin/python3; a python3 earlier on PATH may lack it.
  let failure = "no python3 with torch (apt-get install python3-torch)";
  for (const python of ["python3", "/usr/bin/python3"]) {
    try {
      const output = await new Deno.Command(python, {
        args: [new URL("./torch_step.py", import.meta.url).pathname, "2", String(repetitions)],
        env: { OMP_NUM_THREADS: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!output.success) continue;
      const samples: number[] = JSON.parse(new TextDecoder().decode(output.stdout)).samples_ms;
      return { samples, ...medianMinMax(samples) };
    } catch (error) {
      // Without --allow-run every attempt fails the same way; report that, not a missing torch.
      if (
        error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ) {
        failure = `cannot run ${python}: ${error.message.split("\n")[0]}`;
      }
    }
  }
  return failure;
}

for (const [, backend] of moelab) await backend.dispose();

// The attention and MoE-layer benchmarks and the interleaved step comparisons run as their own
// processes, so their backends, peak byte counts and caches start fresh.
if (!quick) {
  const scripts: [string, string[]][] = [
    ["attention_memory.ts", ["--repetitions", String(repetitions)]],
    ["moe_dense.ts", ["--repetitions", String(repetitions)]],
    ["step_pairs.ts", ["--rounds", String(Math.max(repetitions, 9))]],
    ["cpu_pairs.ts", ["--rounds", String(Math.max(repetitions, 7))]],
  ];
  for (const [script, scriptArgs] of scripts) {
    console.log(`\n## ${script}`);
    await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", new URL(`./${script}`, import.meta.url).pathname, ...scriptArgs],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
  }
}

// A peer that timed out may hold GPU work that never resolves; exit rather than wait for it.
Deno.exit(0);
