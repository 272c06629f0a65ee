/**
 * The tiny-GPT training step on moelab's fast CPU backend against PyTorch CPU (one thread),
 * interleaved: PyTorch runs as `bench/torch_step.py --serve` in a child process, and each round
 * runs one moelab step, then one PyTorch step, so a change in machine load hits both alike.
 * Prints each one's ms per step as median (min–max) and the median (min–max) of the per-round
 * ratios moelab / PyTorch. bench/main.ts times the same steps one after the other.
 *
 * Run: npx deno run -A bench/cpu_pairs.ts [--rounds N] [--warmup N] [--threads 1|2]
 *   (defaults 15, 3, and the fast backend's default matmul threads)
 */

import { createFastCpuBackend } from "../kernels/cpu/fast_backend.ts";
import { Rng } from "../tensor/mod.ts";
import { runTinyStep, tinyGpt } from "./moelab.ts";

function flag(name: string, fallback: number): number {
  const index = Deno.args.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(Deno.args[index + 1]);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} is ${Deno.args[index + 1]}; give a whole count ≥ 1`);
  }
  return value;
}

function summary(values: number[], digits: number): string {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  const at = (x: number) => x.toFixed(digits);
  return `${at(median)} (${at(sorted[0])}–${at(sorted[sorted.length - 1])})`;
}

/** A PyTorch step server: `step()` runs one step in the child and resolves its ms. */
class TorchServer {
  private readonly lines: AsyncIterator<string>;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;

  private constructor(private readonly child: Deno.ChildProcess) {
    this.lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())
      [Symbol.asyncIterator]();
    this.writer = child.stdin.getWriter();
  }

  /** Starts the server with Debian's python3-torch; throws with the reason when none starts. */
  static async start(): Promise<TorchServer> {
    const script = new URL("./torch_step.py", import.meta.url).pathname;
    const failures: string[] = [];
    // Debian's python3-torch lives in /usr/bin/python3; a python3 earlier on PATH may lack it.
    for (const python of ["python3", "/usr/bin/python3"]) {
      try {
        const child = new Deno.Command(python, {
          args: [script, "--serve"],
          env: { OMP_NUM_THREADS: "1" },
          stdin: "piped",
          stdout: "piped",
          stderr: "null",
        }).spawn();
        const server = new TorchServer(child);
        const first = await server.lines.next();
        if (!first.done && JSON.parse(first.value).ready) return server;
        failures.push(`${python}: no torch`);
        await server.close();
      } catch (error) {
        failures.push(`${python}: ${error instanceof Error ? error.message : error}`);
      }
    }
    throw new Error(
      `cannot start PyTorch (${failures.join("; ")}); install it with apt-get install ` +
        "python3-torch, and run with --allow-run",
    );
  }

  async step(): Promise<number> {
    await this.writer.write(new TextEncoder().encode("step\n"));
    const line = await this.lines.next();
    if (line.done) throw new Error("the PyTorch step server exited early");
    return JSON.parse(line.value).ms;
  }

  async close(): Promise<void> {
    await this.writer.close();
    await this.child.status;
  }
}

/** Splits a text stream into lines. */
function lineSplitter(): TransformStream<string, string> {
  let pending = "";
  return new TransformStream({
    transform(chunk, controller) {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const line of lines) if (line.trim() !== "") controller.enqueue(line);
    },
    flush(controller) {
      if (pending.trim() !== "") controller.enqueue(pending);
    },
  });
}

const rounds = flag("--rounds", 15);
const warmup = flag("--warmup", 3);
const threadsFlag = Deno.args.indexOf("--threads");
const threads = threadsFlag < 0 ? undefined : flag("--threads", 2);
if (threads !== undefined && threads !== 1 && threads !== 2) {
  throw new Error(`--threads is ${threads}; give 1 or 2`);
}

const backend = createFastCpuBackend({ matmulThreads: threads as 1 | 2 | undefined });
const gpt = tinyGpt(backend);
const rng = new Rng(3);
const torch = await TorchServer.start();

async function moelabStep(): Promise<number> {
  const start = performance.now();
  const { loss, normSq } = runTinyStep(backend, gpt, rng);
  await loss.item();
  loss.dispose();
  normSq.dispose();
  return performance.now() - start;
}

const moelabMs: number[] = [];
const torchMs: number[] = [];
for (let round = 0; round < warmup + rounds; round++) {
  const ours = await moelabStep();
  const theirs = await torch.step();
  if (round < warmup) continue;
  moelabMs.push(ours);
  torchMs.push(theirs);
}
await torch.close();

const ratios = moelabMs.map((ms, i) => ms / torchMs[i]);
console.log(`${backend.description}; ${rounds} rounds after ${warmup} warm-up rounds`);
console.log(`moelab cpu (fast)      ${summary(moelabMs, 1)} ms/step`);
console.log(`pytorch cpu, 1 thread  ${summary(torchMs, 1)} ms/step`);
console.log(`moelab / pytorch per round: ${summary(ratios, 2)}`);

gpt.optimizer.dispose();
gpt.model.dispose();
await backend.dispose();
