/**
 * Per-op time of the tiny-GPT training step on the WebGPU backend. Each backend method is wrapped
 * so that the commands it records are submitted when it returns, and the time of that submit is
 * added to the op's total. On Mesa's llvmpipe adapter `queue.submit` returned only after the
 * recorded work had run (measured on a 2-core machine, December 2026), so the submit time is the
 * op's device time. Submitting per op adds a fixed cost to each, so the totals overstate small ops.
 *
 * Run: npx deno run -A bench/webgpu_op_profile.ts [--steps N]   (default 5, after 2 warm-up)
 */

import type { Backend, MatmulSpec } from "../kernels/backend.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../kernels/webgpu/backend.ts";
import { Rng } from "../tensor/mod.ts";
import { runTinyStep, tinyGpt } from "./moelab.ts";

interface OpTotals {
  ms: number;
  calls: number;
  dispatches: number;
}

const stepsFlag = Deno.args.indexOf("--steps");
const steps = stepsFlag < 0 ? 5 : Number(Deno.args[stepsFlag + 1]);

/** Returns the label of one call: matmuls by transposition flags, unary and binary by op. */
function labelOf(method: string, args: unknown[]): string {
  if (method === "matmul") {
    const spec = args[2] as MatmulSpec;
    return `matmul tA${+spec.transA} tB${+spec.transB}`;
  }
  if (method.startsWith("unary") || method === "binary") return `${method} ${args[0]}`;
  return method;
}

/** Wraps `backend` so each method's work is submitted and timed on return. */
function profiled(backend: WebGpuBackend, totals: Map<string, OpTotals>): Backend {
  return new Proxy(backend, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== "function" || typeof property !== "string") return value;
      if (["flush", "read", "stats", "release", "alloc", "upload"].includes(property)) {
        return value.bind(target);
      }
      return (...args: unknown[]) => {
        target.flush();
        const before = target.stats().dispatches;
        const result = value.apply(target, args);
        const start = performance.now();
        target.flush();
        const label = labelOf(property, args);
        const entry = totals.get(label) ?? { ms: 0, calls: 0, dispatches: 0 };
        entry.ms += performance.now() - start;
        entry.calls++;
        entry.dispatches += target.stats().dispatches - before;
        totals.set(label, entry);
        return result;
      };
    },
  });
}

const backend = await createWebGpuBackend();
const totals = new Map<string, OpTotals>();
const wrapped = profiled(backend, totals);
const gpt = tinyGpt(wrapped);
const rng = new Rng(3);
for (let step = 0; step < steps + 2; step++) {
  if (step === 2) totals.clear();
  const { loss, normSq } = runTinyStep(wrapped, gpt, rng);
  backend.flush();
  await loss.item();
  loss.dispose();
  normSq.dispose();
}

const rows = [...totals].sort((x, y) => y[1].ms - x[1].ms);
const total = rows.reduce((sum, [, t]) => sum + t.ms, 0) / steps;
console.log(`device ms/step over all ops: ${total.toFixed(1)}`);
console.log("| op | calls/step | dispatches/step | ms/step | share |");
console.log("| --- | --- | --- | --- | --- |");
for (const [label, t] of rows) {
  const ms = t.ms / steps;
  console.log(
    `| ${label} | ${t.calls / steps} | ${t.dispatches / steps} | ${ms.toFixed(2)} | ` +
      `${(100 * ms / total).toFixed(1)}% |`,
  );
}
gpt.optimizer.dispose();
gpt.model.dispose();
await backend.dispose();
