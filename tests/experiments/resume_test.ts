/**
 * Exact resume: a run killed with SIGKILL and resumed from its newest checkpoint logs the same
 * metrics as a run that was never stopped.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readCsv } from "../../experiments/csv.ts";

const cli = fileURLToPath(new URL("../../experiments/cli.ts", import.meta.url));

// Columns that depend only on the computation; throughput and wall time differ between runs.
const EXACT_COLUMNS = ["step", "train_loss", "val_loss", "lr", "grad_norm"];

function configText(outputDir: string, optimizer: string, moe = ""): string {
  return `
experiment: resume
seed: 4
backend: cpu
task: { seqLen: 8 }
model: { dModel: 16, numLayers: 1, numHeads: 2, dFF: 32${moe} }
optimizer: { name: ${optimizer}, lr: 0.01 }
schedule: { warmupSteps: 20 }
train: { steps: 300, batchSize: 2, logEvery: 10, evalEvery: 50, evalBatches: 1, checkpointEvery: 20 }
output: { dir: ${outputDir} }
`;
}

function command(args: string[]): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", cli, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
}

function onlyRunDir(parent: string): string {
  const entries = [...Deno.readDirSync(parent)].filter((e) => e.isDirectory);
  assert.equal(entries.length, 1, `expected one run in ${parent}`);
  return join(parent, entries[0].name);
}

function exactRows(rows: Record<string, number | string>[]): string[] {
  return rows.map((row) => EXACT_COLUMNS.map((c) => String(row[c])).join(","));
}

async function killAndResume(optimizer: string, moe = ""): Promise<void> {
  const root = await Deno.makeTempDir();
  const whole = join(root, "whole");
  const killed = join(root, "killed");
  const wholeConfig = join(root, "whole.yaml");
  const killedConfig = join(root, "killed.yaml");
  await Deno.writeTextFile(wholeConfig, configText(whole, optimizer, moe));
  await Deno.writeTextFile(killedConfig, configText(killed, optimizer, moe));

  const reference = await command(["run", wholeConfig]).output();
  assert.equal(reference.code, 0, new TextDecoder().decode(reference.stderr));

  // Kill the second run as soon as its first checkpoint is complete.
  const child = command(["run", killedConfig]).spawn();
  let runDir = "";
  for (let i = 0; i < 3000; i++) {
    await new Promise((resolve) => setTimeout(resolve, 5));
    try {
      runDir = await onlyRunDir(join(killed, "resume"));
      const steps = [...Deno.readDirSync(join(runDir, "checkpoints"))].map((e) => e.name);
      if (steps.some((name) => name.startsWith("step-"))) break;
    } catch {
      // Not created yet.
    }
  }
  child.kill("SIGKILL");
  const status = await child.output();
  assert.notEqual(status.code, 0, "the run finished before it could be killed");

  const resumed = await command(["run", killedConfig, "--resume", runDir]).output();
  assert.equal(resumed.code, 0, new TextDecoder().decode(resumed.stderr));

  const expected = exactRows(
    await readCsv(join(await onlyRunDir(join(whole, "resume")), "metrics.csv")),
  );
  const actual = exactRows(await readCsv(join(runDir, "metrics.csv")));
  assert.deepEqual(actual, expected);
}

Deno.test("resume after SIGKILL adamw", async () => {
  await killAndResume("adamw");
});

Deno.test("resume after SIGKILL muon", async () => {
  await killAndResume("muon");
});

Deno.test("resume after SIGKILL aux-free moe", async () => {
  // The aux-free router's selection bias is a buffer, not a parameter; it must be checkpointed.
  await killAndResume(
    "adamw",
    ", moe: { router: { name: aux-free, biasUpdateRate: 0.01 }, numExperts: 4, topK: 2, dFF: 16 }",
  );
});

Deno.test("resume rejects another config", async () => {
  const root = await Deno.makeTempDir();
  const path = join(root, "a.yaml");
  await Deno.writeTextFile(path, configText(root, "adamw").replace("steps: 300", "steps: 20"));
  const first = await command(["run", path]).output();
  assert.equal(first.code, 0, new TextDecoder().decode(first.stderr));
  const runDir = await onlyRunDir(join(root, "resume"));

  const changed = await command(["run", path, "--resume", runDir, "--set", "optimizer.lr=0.02"])
    .output();
  const stderr = new TextDecoder().decode(changed.stderr);
  assert.equal(changed.code, 2);
  assert.match(stderr, /checkpoint config hash \w+ differs from the current config hash \w+/);
});
