/** The runner on the CPU backend with a tiny model: resume, claims, shards and Ctrl-C. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { readCsv } from "../../experiments/csv.ts";
import { type ExperimentPlan, loadPlan } from "../../experiments/plan.ts";
import { claimLock } from "../../experiments/run_lock.ts";
import { DONE_MARKER, experimentDir, runPlan } from "../../experiments/runner.ts";

const CLI = fileURLToPath(new URL("../../experiments/cli.ts", import.meta.url));
const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-runner-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

/** Returns a tiny two-arm experiment as YAML; each run takes well under a second on the CPU backend. */
function tinyYaml(outputDir: string, extra = ""): string {
  return `experiment: tiny
backend: cpu
task: { seqLen: 8 }
model: { dModel: 16, numLayers: 1, numHeads: 2, dFF: 32 }
train: { steps: 2, batchSize: 2, logEvery: 1, evalEvery: 2, evalBatches: 1 }
schedule: { warmupSteps: 1 }
output: { dir: ${JSON.stringify(outputDir)} }
arms:
  baseline: {}
  swiglu: { model.mlp: swiglu }
seeds: 2
${extra}`;
}

async function tinyPlan(): Promise<{ plan: ExperimentPlan; path: string }> {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const path = join(dir, "tiny.yaml");
  await Deno.writeTextFile(path, tinyYaml(join(dir, "results")));
  return { plan: await loadPlan(path), path };
}

async function runCli(...args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", CLI, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function listDir(path: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(path)) names.push(entry.name);
  return names.sort();
}

/** metrics.csv of every run without the wall-clock columns, keyed by run id. */
async function metricsByRun(folder: string): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = {};
  for (const name of await listDir(folder)) {
    if (!(await Deno.stat(join(folder, name))).isDirectory || name === "plots") continue;
    const rows = await readCsv(join(folder, name, "metrics.csv"));
    result[name] = rows.map(({ tokens_per_s: _t, elapsed_s: _e, ...rest }) => rest);
  }
  return result;
}

const quiet = {
  backend: () => Promise.resolve(createCpuBackend()),
  log: () => {},
  progress: false,
};

Deno.test("runner writes every run with done", async () => {
  const { plan } = await tinyPlan();
  const result = await runPlan(plan, plan.runs, quiet);
  const folder = experimentDir(plan);

  assert.equal(result.completed.length, 4);
  for (const run of plan.runs) {
    await Deno.stat(join(folder, run.id, DONE_MARKER));
    await Deno.stat(join(folder, run.id, "metrics.csv"));
  }
  assert.ok((await listDir(folder)).includes("plan.json"));
  assert.ok(!(await listDir(folder)).some((name) => name.endsWith(".lock")));
});

Deno.test("runner resume skips done runs", async () => {
  const { plan } = await tinyPlan();
  await runPlan(plan, plan.runs.slice(0, 1), quiet);
  const firstMetrics = await Deno.readTextFile(
    join(experimentDir(plan), plan.runs[0].id, "metrics.csv"),
  );

  const result = await runPlan(plan, plan.runs, quiet);

  assert.deepEqual(result.skipped, [plan.runs[0].id]);
  assert.equal(result.completed.length, 3);
  assert.equal(
    await Deno.readTextFile(join(experimentDir(plan), plan.runs[0].id, "metrics.csv")),
    firstMetrics,
  );
});

Deno.test("runner restarts unfinished run", async () => {
  const { plan } = await tinyPlan();
  const dir = join(experimentDir(plan), plan.runs[0].id);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "metrics.csv"), "step,train_loss\n1,9\n");
  const lines: string[] = [];

  const result = await runPlan(plan, plan.runs.slice(0, 1), {
    ...quiet,
    log: (l) => lines.push(l),
  });

  assert.deepEqual(result.completed, [plan.runs[0].id]);
  assert.ok(lines.some((line) => line.includes("unfinished run found")));
  const rows = await readCsv(join(dir, "metrics.csv"));
  assert.equal(rows.length, 2);
  await Deno.stat(join(dir, DONE_MARKER));
});

Deno.test("runner skips run claimed by live process", async () => {
  const { plan } = await tinyPlan();
  const folder = experimentDir(plan);
  await Deno.mkdir(folder, { recursive: true });
  // Process 1 (init) is always alive, so this lock is not stale.
  const lockPath = join(folder, `${plan.runs[0].id}.lock`);
  await Deno.writeTextFile(
    lockPath,
    JSON.stringify({ host: (await import("node:os")).hostname(), pid: 1, startedAt: "now" }),
  );

  const result = await runPlan(plan, plan.runs.slice(0, 1), quiet);

  assert.deepEqual(result.busy, [plan.runs[0].id]);
});

Deno.test("lock claim is exclusive", async () => {
  const path = join(await Deno.makeTempDir({ dir: TEMP_ROOT }), "run.lock");
  const first = await claimLock(path);
  const second = await claimLock(path);

  assert.ok("release" in first);
  assert.ok("heldBy" in second);
  first.release();
  const third = await claimLock(path);
  assert.ok("release" in third);
  third.release();
});

Deno.test("two shards equal one process", async () => {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const sharedConfig = join(dir, "shared.yaml");
  const singleConfig = join(dir, "single.yaml");
  await Deno.writeTextFile(sharedConfig, tinyYaml(join(dir, "shared")));
  await Deno.writeTextFile(singleConfig, tinyYaml(join(dir, "single")));

  const [shard0, shard1, single] = await Promise.all([
    runCli("run", sharedConfig, "--shard", "0/2"),
    runCli("run", sharedConfig, "--shard", "1/2"),
    runCli("run", singleConfig, "--no-report"),
  ]);

  assert.equal(shard0.code, 0, shard0.stderr);
  assert.equal(shard1.code, 0, shard1.stderr);
  assert.equal(single.code, 0, single.stderr);
  const sharedFolder = join(dir, "shared", "tiny");
  const singleFolder = join(dir, "single", "tiny");
  // Run ids hash output.dir, so the two folders' names differ; compare by plan position.
  const shared = Object.values(await metricsByRun(sharedFolder));
  const alone = Object.values(await metricsByRun(singleFolder));
  assert.equal(shared.length, 4);
  assert.deepEqual(shared, alone);
  assert.deepEqual(
    (await listDir(sharedFolder)).filter((n) => n.endsWith(".lock") || n.endsWith(".tmp")),
    [],
  );
});

Deno.test("shards running the same runs share work", async () => {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const config = join(dir, "x.yaml");
  await Deno.writeTextFile(config, tinyYaml(join(dir, "out")));

  // Two whole runs of the plan at once: each run is trained exactly once.
  const [a, b] = await Promise.all([
    runCli("run", config, "--shard", "0/1"),
    runCli("run", config, "--shard", "0/1"),
  ]);

  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const started = (a.stdout + b.stdout).match(/: starting \(arm/g) ?? [];
  assert.equal(started.length, 4);
});

Deno.test("ctrl-c stops run and releases locks", async () => {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const config = join(dir, "x.yaml");
  await Deno.writeTextFile(config, tinyYaml(join(dir, "out")).replace("seeds: 2", "seeds: 20"));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", CLI, "run", config],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  // Wait for the first finished run, then interrupt.
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("done in")) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  child.kill("SIGINT");
  reader.releaseLock();
  await child.stdout.cancel().catch(() => {});
  const status = await child.status;
  const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());

  assert.equal(status.code, 130, stderr);
  assert.match(stderr, /interrupted/);
  const folder = join(dir, "out", "tiny");
  const names = await listDir(folder);
  assert.deepEqual(names.filter((n) => n.endsWith(".lock")), []);
  const done = names.filter((n) => n.includes("-s")).length;
  assert.ok(done < 40, `all ${done} runs finished before the interrupt`);
});
