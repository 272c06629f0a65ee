/**
 * The tiny-GPT training step on moelab's fast CPU backend against PyTorch CPU (one thread), taken
 * in turns. PyTorch runs as `bench/torch_step.py --serve` in a child process. Each round runs a
 * block of moelab steps, then a block of PyTorch steps, so a change in machine load hits both
 * alike. The first step of each block is not counted, since the other's block may have evicted
 * this one's data from the shared caches.
 *
 * Prints each one's ms per step as median (min–max) over the counted steps, and the median
 * (min–max) over rounds of the ratio of the two block medians, moelab / PyTorch. bench/main.ts
 * times the same steps one after the other.
 *
 * Run: npx deno run -A bench/cpu_pairs.ts [--rounds N] [--block N] [--warmup N] [--threads 1|2]
 *   (defaults 7 rounds, blocks of 4 steps, 3 warm-up steps each, and the fast backend's default
 *   matmul threads)
 */

import { createFastCpuBackend } from "../kernels/cpu/fast_backend.ts";
import { Rng } from "../tensor/mod.ts";
import { runTinyStep, tinyGpt } from "./moelab.ts";
import { countFlag, formatSpread, medianMinMax } from "./timing.ts";

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

const rounds = countFlag("--rounds", 7);
const block = countFlag("--block", 4);
const warmup = countFlag("--warmup", 3);
if (block < 2) {
  throw new Error(
    `--block is ${block}; give 2 or more, since each block's first step is not counted`,
  );
}
const threadsFlag = Deno.args.indexOf("--threads");
const threads = threadsFlag < 0 ? undefined : countFlag("--threads", 2);
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

/** Runs `count` steps and returns the times of all but the first. */
async function timeBlock(step: () => Promise<number>, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) times.push(await step());
  return times.slice(1);
}

for (let i = 0; i < warmup; i++) {
  await moelabStep();
  await torch.step();
}
const moelabMs: number[] = [];
const torchMs: number[] = [];
const ratios: number[] = [];
for (let round = 0; round < rounds; round++) {
  const ours = await timeBlock(moelabStep, block);
  const theirs = await timeBlock(() => torch.step(), block);
  moelabMs.push(...ours);
  torchMs.push(...theirs);
  ratios.push(medianMinMax(ours).median / medianMinMax(theirs).median);
}
await torch.close();

console.log(
  `${backend.description}; ${rounds} rounds of ${block}-step blocks after ${warmup} warm-up steps`,
);
console.log(`moelab cpu (fast)      ${formatSpread(moelabMs, 1)} ms/step`);
console.log(`pytorch cpu, 1 thread  ${formatSpread(torchMs, 1)} ms/step`);
console.log(`moelab / pytorch, ratio of block medians per round: ${formatSpread(ratios, 2)}`);

gpt.optimizer.dispose();
gpt.model.dispose();
await backend.dispose();
