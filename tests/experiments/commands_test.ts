/** The list, config, report and slurm commands through the CLI, in subprocesses. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { configReference } from "../../experiments/reference.ts";

const CLI = fileURLToPath(new URL("../../experiments/cli.ts", import.meta.url));
const EXAMPLE = fileURLToPath(new URL("../../configs/examples/mlp-ablation.yaml", import.meta.url));
const CONFIG_DOC = new URL("../../docs/CONFIG.md", import.meta.url);

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

Deno.test("list prints every registry", async () => {
  const { code, stdout } = await runCli("list");

  assert.equal(code, 0);
  for (
    const heading of ["routers:", "attention variants:", "optimizers:", "schedules:", "tasks:"]
  ) {
    assert.ok(stdout.includes(heading), `missing ${heading}`);
  }
  assert.match(stdout, / {2}adamw: .*\n {4}lr: number > 0, default 0\.003/);
  assert.match(stdout, / {2}cosine: /);
});

Deno.test("config reference lists choices", async () => {
  const { code, stdout } = await runCli("config", "--reference");

  assert.equal(code, 0);
  assert.match(stdout, /name: cosine # one of the registered schedules: cosine, constant, wsd/);
  assert.match(stdout, / {2}steps: 600 # integer >= 1; optimizer steps/);
});

Deno.test("config docs hold current reference", async () => {
  const doc = await Deno.readTextFile(CONFIG_DOC);

  assert.ok(
    doc.includes(configReference()),
    "docs/CONFIG.md is stale; paste deno task config --reference",
  );
});

Deno.test("config lists runs of example", async () => {
  const { code, stdout } = await runCli("config", EXAMPLE);

  assert.equal(code, 0);
  assert.match(stdout, /mlp-ablation: 4 run\(s\), baseline arm baseline/);
  assert.match(stdout, / {2}3 {2}swiglu-s1-[0-9a-f]{12} {2}arm swiglu {2}seed 1/);
});

Deno.test("every command has help", async () => {
  for (const command of ["run", "report", "config", "list", "slurm"]) {
    const { code, stdout } = await runCli(command, "--help");
    assert.equal(code, 0, command);
    assert.match(stdout, new RegExp(`usage: deno task ${command}`), command);
  }
});

Deno.test("unknown option exits 2", async () => {
  const { code, stderr } = await runCli("report", "--colour");

  assert.equal(code, 2);
  assert.match(stderr, /Unknown option '--colour'/);
});

Deno.test("report missing folder exits 2", async () => {
  const { code, stderr } = await runCli("report", "results/no-such-experiment");

  assert.equal(code, 2);
  assert.match(stderr, /results folder not found: results\/no-such-experiment/);
});

Deno.test("slurm writes script", async () => {
  const out = await Deno.makeTempDir();
  const { code, stdout, stderr } = await runCli(
    "slurm",
    EXAMPLE,
    "--set",
    `output.dir=${out}`,
    "--concurrency",
    "2",
  );

  assert.equal(code, 0, stderr);
  const script = await Deno.readTextFile(join(out, "mlp-ablation", "slurm", "mlp-ablation.sbatch"));
  assert.match(script, /#SBATCH --array=0-3%2/);
  assert.match(
    script,
    /deno task run configs\/examples\/mlp-ablation\.yaml --index "\$SLURM_ARRAY_TASK_ID"/,
  );
  assert.match(stdout, /submit with: {2}sbatch /);
  await Deno.stat(join(out, "mlp-ablation", "slurm", "logs"));
  await Deno.remove(out, { recursive: true });
});

Deno.test("run example then report", async () => {
  const out = await Deno.makeTempDir();
  const { code, stdout, stderr } = await runCli("run", EXAMPLE, "--set", `output.dir=${out}`);

  assert.equal(code, 0, stderr);
  assert.match(stdout, /mlp-ablation: 4 completed/);
  assert.match(stdout, /report: .*report\.md/);
  await Deno.stat(join(out, "mlp-ablation", "report.html"));
  await Deno.remove(out, { recursive: true });
});
