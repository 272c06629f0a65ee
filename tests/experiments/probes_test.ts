/** attention.csv from `train()` on tiny CPU runs: MoH head loads and DMA kept fractions. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { parseConfig } from "../../experiments/config.ts";
import { readCsv } from "../../experiments/csv.ts";
import { train } from "../../experiments/trainer.ts";

const COLUMNS = ["step", "layer", "head", "entropy", "sink_rate", "moh_load", "dma_kept_fraction"];

async function attentionRows(
  attention: Record<string, unknown>,
): Promise<{ header: string[]; rows: Record<string, unknown>[] }> {
  const outputDir = await Deno.makeTempDir();
  // The tiny CPU run of trainer_test.ts, probed after each of its two steps.
  const config = parseConfig({
    experiment: "tiny",
    seed: 3,
    backend: "cpu",
    task: { name: "lm", corpus: "moby-dick", seqLen: 8, valFraction: 0.1 },
    model: { dModel: 16, numLayers: 2, numHeads: 4, dFF: 32, attention },
    train: { steps: 2, batchSize: 2, logEvery: 1, evalEvery: 2, evalBatches: 1, probeEvery: 1 },
    schedule: { warmupSteps: 1 },
    output: { dir: outputDir },
  }, "tiny probe config");
  const { dir } = await train(config, {
    backend: createCpuBackend(),
    configText: "",
    log: () => {},
  });
  const path = join(dir, "attention.csv");
  const header = (await Deno.readTextFile(path)).split("\n")[0].split(",");
  return { header, rows: await readCsv(path) };
}

Deno.test("attention csv columns keep order", async () => {
  const { header, rows } = await attentionRows({ name: "mha" });
  assert.deepEqual(header, COLUMNS);
  // 2 probes × 2 layers × 4 heads.
  assert.equal(rows.length, 16);
  assert.ok(rows.every((row) => Number.isNaN(row.moh_load)), "mha rows have moh_load NaN");
  assert.ok(rows.every((row) => Number.isNaN(row.dma_kept_fraction)), "mha dma_kept_fraction NaN");
});

Deno.test("attention csv moh head loads", async () => {
  const { rows } = await attentionRows({ name: "moh", sharedHeads: 2, topK: 1 });
  assert.equal(rows.length, 16);
  for (const row of rows) {
    const load = row.moh_load as number;
    if ((row.head as number) < 2) {
      assert.equal(load, 1, `shared head ${row.head} load`);
    } else {
      assert.ok(load >= 0, `routed head ${row.head} load ${load} is negative`);
      assert.ok(load <= 1, `routed head ${row.head} load ${load} is above 1`);
    }
    assert.ok(Number.isNaN(row.dma_kept_fraction), "moh rows have dma_kept_fraction NaN");
  }
  // One routed head of two is active per token, so each layer's routed loads sum to 1.
  for (const step of [1, 2]) {
    for (const layer of [0, 1]) {
      const routed = rows.filter((r) =>
        r.step === step && r.layer === layer && (r.head as number) >= 2
      );
      const total = routed.reduce((a, r) => a + (r.moh_load as number), 0);
      assert.ok(Math.abs(total - 1) <= 1e-6, `step ${step} layer ${layer} loads sum to ${total}`);
    }
  }
});

Deno.test("attention csv dma kept fraction", async () => {
  const { rows } = await attentionRows({ name: "dma", keep: 2 });
  assert.equal(rows.length, 16);
  for (const row of rows) {
    const kept = row.dma_kept_fraction as number;
    // seqLen 8 keeping 2 keys: below 1, above the 2/8 of the last query.
    assert.ok(kept > 0.25, `layer ${row.layer} kept fraction ${kept} is at most 2/8`);
    assert.ok(kept < 1, `layer ${row.layer} kept fraction ${kept} shows no sparsity`);
    assert.ok(Number.isNaN(row.moh_load), "dma rows have moh_load NaN");
  }
});
