/** The command line as a user meets it: exit codes and one-paragraph messages, no stack traces. */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const cli = fileURLToPath(new URL("../../experiments/cli.ts", import.meta.url));

async function runCli(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", cli, ...args],
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

function assertNoStack(stderr: string): void {
  assert.doesNotMatch(stderr, /^\s+at /m, `stack trace printed:\n${stderr}`);
}

async function writeConfig(text: string): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("cli missing config exits 2", async () => {
  const { code, stderr } = await runCli("run", "configs/does-not-exist.yaml");
  assert.equal(code, 2);
  assert.match(stderr, /config file not found: configs\/does-not-exist.yaml/);
  assertNoStack(stderr);
});

Deno.test("cli unknown key names path and valid keys", async () => {
  const path = await writeConfig("experiment: x\nmodel:\n  dModle: 64\n");
  const { code, stderr } = await runCli("run", path);
  assert.equal(code, 2);
  assert.match(stderr, /model\.dModle/);
  assert.match(stderr, /dModel/);
  assertNoStack(stderr);
});

Deno.test("cli wrong type exits 2", async () => {
  const path = await writeConfig("experiment: x\ntrain:\n  steps: many\n");
  const { code, stderr } = await runCli("run", path);
  assert.equal(code, 2);
  assert.match(stderr, /train\.steps/);
  assertNoStack(stderr);
});

Deno.test("cli bad backend flag exits 2", async () => {
  const { code, stderr } = await runCli("run", "configs/quickstart.yaml", "--backend", "tpu");
  assert.equal(code, 2);
  assert.match(stderr, /--backend is "tpu"; choose webgpu or cpu/);
});

Deno.test("cli unknown set key exits 2", async () => {
  const { code, stderr } = await runCli("run", "configs/quickstart.yaml", "--set", "train.stepz=3");
  assert.equal(code, 2);
  assert.match(stderr, /train\.stepz/);
  assertNoStack(stderr);
});

Deno.test("cli unknown command exits 2", async () => {
  const { code, stderr } = await runCli("fly");
  assert.equal(code, 2);
  assert.match(stderr, /unknown command "fly"/);
});

Deno.test("cli cpu run succeeds", async () => {
  const out = await Deno.makeTempDir();
  const { code, stdout, stderr } = await runCli(
    "run",
    "configs/quickstart.yaml",
    "--backend",
    "cpu",
    "--set",
    "train.steps=2",
    "--set",
    "model.numLayers=1",
    "--set",
    "model.dModel=16",
    "--set",
    "model.dFF=32",
    "--set",
    "train.batchSize=2",
    "--set",
    "train.evalBatches=1",
    "--set",
    `output.dir=${out}`,
  );
  assert.equal(code, 0, stderr);
  assert.match(stdout, /done in .*validation loss/);
});

Deno.test("cli no adapter names the fix", async () => {
  // No Vulkan driver is installed on the CI machine, so this backend finds no adapter there.
  const probe = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "console.log(String(await navigator.gpu.requestAdapter() === null))"],
    env: { DENO_WEBGPU_BACKEND: "vulkan" },
    stdout: "piped",
  }).output();
  if (new TextDecoder().decode(probe.stdout).trim() !== "true") {
    console.log(
      "skipped: a Vulkan adapter exists on this machine, so 'no adapter' cannot be staged",
    );
    return;
  }
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", cli, "run", "configs/quickstart.yaml", "--set", "train.steps=1"],
    env: { DENO_WEBGPU_BACKEND: "vulkan", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 1);
  assert.match(stderr, /--backend cpu/);
  assertNoStack(stderr);
});
