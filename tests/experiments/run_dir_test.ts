import assert from "node:assert/strict";
import { join } from "node:path";
import { createRunDir } from "../../experiments/run_dir.ts";

// Every test writes below this folder, which is removed when the test module unloads.
const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-run-dir-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

const NOW = new Date(Date.UTC(2024, 0, 2, 3, 4, 5));

Deno.test("createRunDir id from UTC time and hash", async () => {
  const output = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const { dir, runId } = await createRunDir(output, "quickstart", "abc123def456", { now: NOW });

  assert.equal(runId, "20240102-030405-abc123def456");
  assert.equal(dir, join(output, "quickstart", runId));
});

Deno.test("createRunDir creates plots folder", async () => {
  const output = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const { dir } = await createRunDir(output, "quickstart", "abc", { now: NOW });

  const info = await Deno.stat(join(dir, "plots"));

  assert.ok(info.isDirectory);
});

Deno.test("createRunDir existing id gets suffix", async () => {
  const output = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const first = await createRunDir(output, "x", "abc", { now: NOW });
  const second = await createRunDir(output, "x", "abc", { now: NOW });
  const third = await createRunDir(output, "x", "abc", { now: NOW });

  assert.equal(first.runId, "20240102-030405-abc");
  assert.equal(second.runId, "20240102-030405-abc-2");
  assert.equal(third.runId, "20240102-030405-abc-3");
});

Deno.test("createRunDir leaves existing run untouched", async () => {
  const output = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const first = await createRunDir(output, "x", "abc", { now: NOW });
  await Deno.writeTextFile(join(first.dir, "metrics.csv"), "step\n1\n");

  const second = await createRunDir(output, "x", "abc", { now: NOW });

  assert.notEqual(second.dir, first.dir);
  assert.equal(await Deno.readTextFile(join(first.dir, "metrics.csv")), "step\n1\n");
});

Deno.test("createRunDir concurrent calls get distinct ids", async () => {
  const output = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const runs = await Promise.all(
    Array.from({ length: 5 }, () => createRunDir(output, "x", "abc", { now: NOW })),
  );

  assert.equal(new Set(runs.map((run) => run.runId)).size, 5);
});
