/**
 * Fused against unfused causal attention forward + backward at T = 64, 256 and 1024: time and
 * peak bytes of live backend storages. q, k and v are [1, 4, T, 32] (the tiny GPT's heads).
 *
 * Peak bytes come from a wrapper around the backend that adds the size of every storage an op
 * returns and subtracts it on release, so they count what moelab holds at once (inputs, saved
 * activations, gradients). They exclude the WebGPU buffer pool's spare buffers and any scratch
 * memory inside a kernel. Bytes assume 4 per element (f32 and i32).
 *
 * Run: npx deno run -A bench/attention_memory.ts [--repetitions N] [--quick]
 *   --quick measures T = 64 and 256 only.
 */

import type { Backend, Storage } from "../kernels/backend.ts";
import { createFastCpuBackend } from "../kernels/cpu/fast_backend.ts";
import { createWebGpuBackend } from "../kernels/webgpu/backend.ts";
import {
  attention,
  backward,
  matmul,
  Rng,
  scale,
  softmax,
  sumAll,
  Tensor,
  withScope,
} from "../tensor/mod.ts";
import { time, type Timing, type TimingOptions } from "./timing.ts";

export const ATTENTION_SEQ_LENS = [64, 256, 1024];
const HEADS = 4;
const HEAD_DIM = 32;

/** Live and peak bytes of the storages a tracked backend has handed out. */
export interface AllocationStats {
  live: number;
  peak: number;
  /** Starts a new peak from the current live bytes. */
  resetPeak(): void;
}

function isStorage(value: unknown): value is Storage {
  return typeof value === "object" && value !== null && "size" in value && "dtype" in value &&
    typeof (value as Storage).size === "number";
}

/**
 * Wraps `backend` so that every storage returned by a method (directly, in an array or as a
 * field of a returned object) counts as live until `release`. Methods run on the real backend,
 * so private fields keep working.
 */
export function trackAllocations(backend: Backend): { backend: Backend; stats: AllocationStats } {
  const live = new Map<Storage, number>();
  const stats: AllocationStats = {
    live: 0,
    peak: 0,
    resetPeak() {
      stats.peak = stats.live;
    },
  };
  const add = (storage: Storage) => {
    if (live.has(storage)) return;
    const bytes = storage.size * 4;
    live.set(storage, bytes);
    stats.live += bytes;
    stats.peak = Math.max(stats.peak, stats.live);
  };
  const collect = (value: unknown) => {
    if (isStorage(value)) add(value);
    else if (Array.isArray(value)) value.forEach(collect);
    else if (typeof value === "object" && value !== null && !ArrayBuffer.isView(value)) {
      for (const field of Object.values(value)) if (isStorage(field)) add(field);
    }
  };

  const proxy = new Proxy(backend, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (property === "release") {
        return (storage: Storage) => {
          const bytes = live.get(storage);
          if (bytes !== undefined) {
            live.delete(storage);
            stats.live -= bytes;
          }
          return value.call(target, storage);
        };
      }
      return (...args: unknown[]) => {
        const result = value.apply(target, args);
        if (result instanceof Promise) return result;
        collect(result);
        return result;
      };
    },
  });
  return { backend: proxy, stats };
}

export interface AttentionMemoryResult {
  timing: Timing;
  /** Peak live bytes during one forward + backward, the inputs included. */
  peakBytes: number;
}

/** Times one causal attention forward + backward of [1, 4, seqLen, 32] and records peak bytes. */
export async function measureAttention(
  backend: Backend,
  seqLen: number,
  fused: boolean,
  options: TimingOptions,
): Promise<AttentionMemoryResult> {
  const tracked = trackAllocations(backend);
  const b = tracked.backend;
  const shape = [1, HEADS, seqLen, HEAD_DIM];
  const size = shape.reduce((p, d) => p * d, 1);
  const rng = new Rng(7);
  const inputs = [0, 1, 2].map(() => {
    const t = Tensor.fromArray(b, rng.normalArray(size), shape, "f32");
    t.requiresGrad = true;
    return t;
  });
  const [q, k, v] = inputs;

  let peakBytes = 0;
  const timing = await time(async () => {
    tracked.stats.resetPeak();
    const dq = withScope(() => {
      const out = fused ? attention(q, k, v) : matmul(
        softmax(matmul(scale(q, 1 / Math.sqrt(HEAD_DIM)), k, { transB: true }), { causal: true }),
        v,
      );
      backward(sumAll(out));
      const grad = q.grad!.detach();
      for (const t of inputs) {
        t.grad?.dispose();
        t.grad = null;
      }
      return grad;
    });
    b.flush();
    await b.read(dq.storage);
    peakBytes = Math.max(peakBytes, tracked.stats.peak);
    dq.dispose();
  }, options);
  for (const t of inputs) t.dispose();
  return { timing, peakBytes };
}

if (import.meta.main) {
  const args = Deno.args;
  const flag = args.indexOf("--repetitions");
  const repetitions = flag < 0 ? 5 : Number(args[flag + 1]);
  if (!Number.isInteger(repetitions) || repetitions < 1) {
    throw new Error(`--repetitions is ${args[flag + 1]}; give a whole count ≥ 1`);
  }
  const seqLens = args.includes("--quick") ? [64, 256] : ATTENTION_SEQ_LENS;
  const options = { warmup: 2, repetitions };

  const backends: [string, Backend][] = [];
  try {
    backends.push(["moelab webgpu", await createWebGpuBackend()]);
  } catch (error) {
    console.log(`webgpu backend absent: ${error instanceof Error ? error.message : error}`);
  }
  backends.push(["moelab cpu (fast)", createFastCpuBackend()]);
  console.log(
    `date ${new Date().toISOString()}; ${backends.map(([, b]) => b.description).join("; ")}`,
  );

  console.log(
    "\n| T | implementation | kernel | ms median (min–max) | peak MiB |\n| --- | --- | --- | --- | --- |",
  );
  for (const seqLen of seqLens) {
    for (const [label, backend] of backends) {
      for (const fused of [false, true]) {
        if (fused && typeof backend.attention !== "function") continue;
        const { timing, peakBytes } = await measureAttention(backend, seqLen, fused, options);
        const t = timing;
        console.log(
          `| ${seqLen} | ${label} | ${fused ? "fused" : "unfused"} | ${t.median.toFixed(2)} ` +
            `(${t.min.toFixed(2)}–${t.max.toFixed(2)}) | ${(peakBytes / 2 ** 20).toFixed(2)} |`,
        );
      }
    }
  }
  for (const [, backend] of backends) await backend.dispose();
}
