/** End-to-end runs of the trainer on the CPU backend with a tiny model. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { DecoderLM } from "../../layers/models/decoder_lm.ts";
import { createOptimizer } from "../../optim/create.ts";
import { Rng } from "../../tensor/mod.ts";
import { parseConfig } from "../../experiments/config.ts";
import { readCsv } from "../../experiments/csv.ts";
import { checkWarmup, train, trainStep } from "../../experiments/trainer.ts";
import { LmModel, uploadTokenBatch } from "../../experiments/tasks/lm_model.ts";

/** A config small enough to train a few steps in about a second on the CPU backend. */
export function tinyConfig(outputDir: string, overrides: Record<string, unknown> = {}) {
  return parseConfig({
    experiment: "tiny",
    seed: 3,
    backend: "cpu",
    task: { name: "lm", corpus: "moby-dick", seqLen: 8, valFraction: 0.1 },
    model: { dModel: 16, numLayers: 2, numHeads: 2, dFF: 32 },
    train: { steps: 4, batchSize: 2, logEvery: 1, evalEvery: 2, evalBatches: 2 },
    schedule: { warmupSteps: 1 },
    output: { dir: outputDir },
    ...overrides,
  }, "tiny config");
}

Deno.test("trainer writes csv plot summary", async () => {
  const outputDir = await Deno.makeTempDir();
  const backend = createCpuBackend();
  const { dir, summary } = await train(tinyConfig(outputDir), {
    backend,
    configText: "",
    log: () => {},
  });

  const rows = await readCsv(join(dir, "metrics.csv"));
  assert.equal(rows.length, 4);
  assert.equal(rows[3].step, 4);
  assert.equal(typeof rows[3].val_loss, "number");
  assert.equal(rows[0].val_loss, "");
  const png = await Deno.readFile(join(dir, "plots", "loss.png"));
  assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
  const saved = JSON.parse(await Deno.readTextFile(join(dir, "summary.json")));
  assert.equal(saved.status, "completed");
  assert.equal(saved.finalMetrics.valLoss, summary.finalMetrics.valLoss);
  assert.ok(Number.isFinite(saved.finalMetrics.valLoss));
  assert.equal(backend.liveStorages(), 0);
});

Deno.test("trainer same seed same metrics", async () => {
  const outputDir = await Deno.makeTempDir();
  const losses = [];
  for (let i = 0; i < 2; i++) {
    const { dir } = await train(tinyConfig(outputDir), {
      backend: createCpuBackend(),
      configText: "",
      log: () => {},
    });
    losses.push((await readCsv(join(dir, "metrics.csv"))).map((r) => r.train_loss));
  }
  assert.deepEqual(losses[0], losses[1]);
});

Deno.test("trainer never reuses a run directory", async () => {
  const outputDir = await Deno.makeTempDir();
  const first = await train(tinyConfig(outputDir), {
    backend: createCpuBackend(),
    configText: "",
    log: () => {},
  });
  const second = await train(tinyConfig(outputDir), {
    backend: createCpuBackend(),
    configText: "",
    log: () => {},
  });
  assert.notEqual(first.dir, second.dir);
});

Deno.test("trainer stops on NaN loss and keeps rows", async () => {
  const outputDir = await Deno.makeTempDir();
  const config = tinyConfig(outputDir, {
    optimizer: { lr: 1e30, gradClip: 0 },
    train: { steps: 6, batchSize: 2, logEvery: 1, evalEvery: 100, evalBatches: 1 },
  });
  await assert.rejects(
    train(config, { backend: createCpuBackend(), configText: "", log: () => {} }),
    /training diverged: train loss is NaN at step \d/,
  );
  const [runId] = [...Deno.readDirSync(join(outputDir, "tiny"))].map((e) => e.name);
  const rows = await readCsv(join(outputDir, "tiny", runId, "metrics.csv"));
  assert.ok(rows.length >= 1, "rows logged before the NaN are kept");
  const saved = JSON.parse(await Deno.readTextFile(join(outputDir, "tiny", runId, "summary.json")));
  assert.equal(saved.status, "failed");
});

Deno.test("trainStep live storages stay flat", () => {
  const backend = createCpuBackend();
  const model = new LmModel(
    new DecoderLM(backend, new Rng(1), {
      vocabSize: 256,
      maxSeqLen: 8,
      dModel: 16,
      numLayers: 2,
      numHeads: 2,
      dFF: 32,
      mlp: "swiglu",
      norm: "layernorm",
      position: "learned",
      tieEmbeddings: false,
      normEps: 1e-5,
      initStd: 0.02,
    }),
  );
  const { optimizer } = createOptimizer(model.parameters(), { name: "adamw", lr: 1e-3 });
  const rng = new Rng(2);
  const counts = [];
  for (let step = 0; step < 4; step++) {
    const ids = Int32Array.from({ length: 16 }, () => rng.int(256));
    const batch = uploadTokenBatch(backend, ids, ids.map((v) => (v + 1) % 256), 2, 8);
    const { loss, normSq } = trainStep(model, optimizer, batch, 1, 1);
    loss.dispose();
    normSq.dispose();
    counts.push(backend.liveStorages());
  }
  assert.equal(counts[1], counts[0]);
  assert.equal(counts[3], counts[0]);
  optimizer.dispose();
  model.dispose();
  assert.equal(backend.liveStorages(), 0);
});

Deno.test({
  name: "trainStep webgpu matches cpu",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { createWebGpuBackend } = await import("../../kernels/webgpu/backend.ts");
    const gpu = await createWebGpuBackend();
    const losses: number[][] = [];
    const liveCounts: number[] = [];
    const buffersCreated: number[] = [];
    for (const backend of [createCpuBackend(), gpu]) {
      const model = new LmModel(
        new DecoderLM(backend, new Rng(5), {
          vocabSize: 256,
          maxSeqLen: 13,
          dModel: 24,
          numLayers: 2,
          numHeads: 3,
          dFF: 40,
          mlp: "gelu",
          norm: "rmsnorm",
          position: "rope",
          tieEmbeddings: true,
          normEps: 1e-5,
          initStd: 0.02,
        }),
      );
      const { optimizer } = createOptimizer(model.parameters(), { name: "adamw", lr: 3e-3 });
      const rng = new Rng(6);
      const run: number[] = [];
      for (let step = 0; step < 3; step++) {
        const ids = Int32Array.from({ length: 3 * 13 }, () => rng.int(256));
        const batch = uploadTokenBatch(backend, ids, ids.map((v) => (v * 7 + 1) % 256), 3, 13);
        const { loss, normSq } = trainStep(model, optimizer, batch, 1, 1);
        run.push(await loss.item());
        loss.dispose();
        normSq.dispose();
        if (backend === gpu) {
          liveCounts.push(gpu.liveStorages());
          buffersCreated.push(gpu.stats().buffersCreated);
        }
      }
      losses.push(run);
      optimizer.dispose();
      model.dispose();
    }
    for (let step = 0; step < 3; step++) {
      const [cpu, webgpu] = [losses[0][step], losses[1][step]];
      assert.ok(
        Math.abs(cpu - webgpu) <= 1e-4 * Math.abs(cpu),
        `step ${step + 1}: cpu ${cpu} webgpu ${webgpu}`,
      );
    }
    assert.equal(liveCounts[2], liveCounts[1], "live storages grow across WebGPU steps");
    assert.equal(buffersCreated[2], buffersCreated[1], "GPU buffers created after the second step");
    await gpu.dispose();
  },
});

Deno.test("trainer profiles super experts", async () => {
  const outputDir = await Deno.makeTempDir();
  const config = tinyConfig(outputDir, {
    model: {
      dModel: 16,
      numLayers: 2,
      numHeads: 2,
      dFF: 32,
      moe: { router: { name: "softmax-topk" }, numExperts: 4, topK: 2, dFF: 16 },
    },
    train: {
      steps: 4,
      batchSize: 2,
      logEvery: 2,
      evalEvery: 2,
      evalBatches: 2,
      superExperts: true,
    },
  });
  const { dir, summary } = await train(config, {
    backend: createCpuBackend(),
    configText: "",
    log: () => {},
  });
  const rows = await readCsv(join(dir, "super_experts.csv"));
  assert.equal(rows.length, 2 * 4, "one row per (layer, expert)");
  assert.ok(rows.every((row) => row.flagged === 0 || row.flagged === 1));
  const pruning = summary.superExperts as Record<string, number>;
  assert.ok(Number.isFinite(pruning.lossAllExperts));
  assert.ok(Number.isFinite(pruning.lossSuperExpertsZeroed));
});

Deno.test("trainer warns when warm-up covers the run", async () => {
  assert.equal(checkWarmup({ warmupSteps: 49 }, 50), null, "warm-up shorter than the run");
  assert.match(
    checkWarmup({ warmupSteps: 50 }, 50) ?? "",
    /warmupSteps is 50 but train.steps is 50/,
  );
  assert.equal(checkWarmup({ name: "constant" }, 50), null, "schedule without warm-up");

  const outputDir = await Deno.makeTempDir();
  const lines: string[] = [];
  await train(tinyConfig(outputDir, { schedule: { warmupSteps: 4 } }), {
    backend: createCpuBackend(),
    configText: "",
    log: (line) => lines.push(line),
  });
  assert.ok(
    lines.some((line) => line.startsWith("warning: schedule.warmupSteps is 4")),
    "the run logs the warning",
  );
});
