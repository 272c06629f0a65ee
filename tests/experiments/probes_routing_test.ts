/** routing.csv from `train()` on a tiny CPU MoE run: column order and `max_vio_global`. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { parseConfig } from "../../experiments/config.ts";
import { readCsv } from "../../experiments/csv.ts";
import { train } from "../../experiments/trainer.ts";

const COLUMNS = [
  "step",
  "layer",
  "expert",
  "load",
  "max_vio",
  "cv",
  "dead_experts",
  "drop_rate",
  "router_entropy",
  "fluctuation",
  "fluctuation_topk",
  "max_vio_global",
];

async function routingRows(): Promise<{ header: string[]; rows: Record<string, unknown>[] }> {
  const outputDir = await Deno.makeTempDir();
  const config = parseConfig({
    experiment: "tiny-moe",
    seed: 3,
    backend: "cpu",
    task: { name: "lm", corpus: "moby-dick", seqLen: 8, valFraction: 0.1 },
    model: {
      dModel: 16,
      numLayers: 2,
      numHeads: 4,
      dFF: 32,
      moe: { router: { name: "softmax-topk" }, numExperts: 4, topK: 1, dFF: 16 },
    },
    train: { steps: 2, batchSize: 2, logEvery: 1, evalEvery: 2, evalBatches: 1, probeEvery: 1 },
    schedule: { warmupSteps: 1 },
    output: { dir: outputDir },
  }, "tiny routing probe config");
  const { dir } = await train(config, {
    backend: createCpuBackend(),
    configText: "",
    log: () => {},
  });
  const path = join(dir, "routing.csv");
  const header = (await Deno.readTextFile(path)).split("\n")[0].split(",");
  return { header, rows: await readCsv(path) };
}

Deno.test("routing csv max_vio_global column", async () => {
  const { header, rows } = await routingRows();
  assert.deepEqual(header, COLUMNS);
  // 2 probes × 2 layers × 4 experts.
  assert.equal(rows.length, 16);

  let differs = false;
  for (const step of [1, 2]) {
    for (const layer of [0, 1]) {
      const layerRows = rows.filter((r) => r.step === step && r.layer === layer);
      const global = layerRows[0].max_vio_global as number;
      assert.ok(Number.isFinite(global) && global >= 0, `step ${step} layer ${layer}: ${global}`);
      // Top-1 over 4 experts: MaxVio is at most E − 1 = 3.
      assert.ok(global <= 3, `step ${step} layer ${layer}: ${global}`);
      for (const row of layerRows) {
        assert.equal(row.max_vio_global, global, `step ${step} layer ${layer} repeats the value`);
      }
      if (Math.abs(global - (layerRows[0].max_vio as number)) > 1e-9) differs = true;
    }
  }
  // Loads summed over 4 batches of 16 tokens rarely match the probe batch's alone.
  assert.ok(differs, "max_vio_global equals the probe batch max_vio on every layer and step");
});
