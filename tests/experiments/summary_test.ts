import assert from "node:assert/strict";
import { join } from "node:path";
import { moelabVersion, type RunSummary, writeSummary } from "../../experiments/summary.ts";

// Every test writes below this folder, which is removed when the test module unloads.
const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-summary-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

function sampleSummary(overrides: Partial<RunSummary> = {}): RunSummary {
  return {
    runId: "20240102-030405-abc",
    experiment: "quickstart",
    configHash: "abc",
    version: moelabVersion(),
    backend: "cpu",
    adapter: "cpu reference",
    seed: 0,
    startedAt: "2024-01-02T03:04:05.000Z",
    wallTimeSeconds: 12.5,
    steps: 10,
    status: "completed",
    finalMetrics: { trainLoss: 2.5, valLoss: 2.75 },
    ...overrides,
  };
}

Deno.test("writeSummary round-trips", async () => {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  await writeSummary(dir, sampleSummary());

  const parsed = JSON.parse(await Deno.readTextFile(join(dir, "summary.json")));

  assert.deepEqual(parsed, sampleSummary());
});

Deno.test("writeSummary leaves no temporary file", async () => {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  await writeSummary(dir, sampleSummary());

  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);

  assert.deepEqual(names, ["summary.json"]);
});

Deno.test("writeSummary replaces previous summary", async () => {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  await writeSummary(dir, sampleSummary({ status: "failed", error: "loss is NaN" }));
  await writeSummary(dir, sampleSummary());

  const parsed = JSON.parse(await Deno.readTextFile(join(dir, "summary.json")));

  assert.equal(parsed.status, "completed");
});

Deno.test("writeSummary non-finite metrics as strings", async () => {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  await writeSummary(dir, sampleSummary({ finalMetrics: { trainLoss: NaN, gradNorm: Infinity } }));

  const parsed = JSON.parse(await Deno.readTextFile(join(dir, "summary.json")));

  assert.deepEqual(parsed.finalMetrics, { trainLoss: "NaN", gradNorm: "Infinity" });
});

Deno.test("moelabVersion matches package.json", async () => {
  const url = new URL("../../package.json", import.meta.url);
  const packageJson = JSON.parse(await Deno.readTextFile(url));

  assert.equal(moelabVersion(), packageJson.version);
});

Deno.test("moelabVersion is semver", () => {
  assert.match(moelabVersion(), /^\d+\.\d+\.\d+/);
});
