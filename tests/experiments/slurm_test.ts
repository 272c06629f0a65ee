import assert from "node:assert/strict";
import { expandPlan } from "../../experiments/plan.ts";
import { shellQuote, slurmPaths, slurmScript } from "../../experiments/slurm.ts";

const plan = expandPlan(
  { experiment: "abl", arms: { a: {}, b: { "model.mlp": "swiglu" } }, seeds: 3 },
  "configs/abl.yaml",
);

Deno.test("slurm script array and logs", () => {
  const script = slurmScript(plan, {
    configPath: "configs/abl.yaml",
    overrides: ["train.steps=10", "output.dir=a b"],
    repoRoot: "/repo",
    concurrency: 2,
    time: "01:00:00",
    gpus: 1,
  });
  const lines = script.split("\n");

  assert.equal(lines[0], "#!/bin/bash");
  assert.ok(lines.includes("#SBATCH --array=0-5%2"), script);
  assert.ok(lines.includes("#SBATCH --output=/repo/results/abl/slurm/logs/%A_%a.out"), script);
  assert.ok(lines.includes("#SBATCH --error=/repo/results/abl/slurm/logs/%A_%a.err"), script);
  assert.ok(lines.includes("#SBATCH --time=01:00:00"), script);
  assert.ok(lines.includes("#SBATCH --gpus-per-task=1"), script);
  assert.ok(lines.includes("cd /repo"), script);
  assert.ok(
    lines.includes(
      `deno task run configs/abl.yaml --index "$SLURM_ARRAY_TASK_ID" --set train.steps=10 ` +
        `--set 'output.dir=a b'`,
    ),
    script,
  );
});

Deno.test("slurm script without limits", () => {
  const script = slurmScript(plan, { configPath: "c.yaml", overrides: [], repoRoot: "/repo" });

  assert.match(script, /^#SBATCH --array=0-5$/m);
  assert.doesNotMatch(script, /--time|--partition|--gpus/);
});

Deno.test("slurm paths under results", () => {
  assert.deepEqual(slurmPaths(plan), {
    scriptPath: "results/abl/slurm/abl.sbatch",
    logDir: "results/abl/slurm/logs",
  });
});

Deno.test("shellQuote quotes unsafe words", () => {
  assert.equal(shellQuote("train.steps=10"), "train.steps=10");
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
});
