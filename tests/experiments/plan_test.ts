import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import { loadConfig, parseConfig } from "../../experiments/config.ts";
import { UserError } from "../../experiments/errors.ts";
import { expandPlan, loadPlan, parseShard, selectRuns } from "../../experiments/plan.ts";
import { optimizers, Registry, schedules } from "../../experiments/registry.ts";

const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-plan-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

function errorOf(action: () => unknown): Error {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof Error);
    return error;
  }
  assert.fail("expected an error, but none was thrown");
}

Deno.test("plan arms x grid x seeds order", () => {
  const plan = expandPlan({
    experiment: "x",
    arms: { baseline: {}, swiglu: { "model.mlp": "swiglu" } },
    seeds: 2,
    sweep: { grid: { "optimizer.lr": [1e-3, 3e-3], "train.steps": [5, 10] } },
  }, "x.yaml");

  assert.equal(plan.runs.length, 2 * 4 * 2);
  assert.deepEqual(plan.runs.map((r) => r.index), [...Array(16).keys()]);
  assert.deepEqual(plan.runs.slice(0, 4).map((r) => [r.arm, r.point, r.seed]), [
    ["baseline", 0, 0],
    ["baseline", 0, 1],
    ["baseline", 1, 0],
    ["baseline", 1, 1],
  ]);
  // The first grid key varies slowest.
  assert.deepEqual(plan.points, [
    { "optimizer.lr": 1e-3, "train.steps": 5 },
    { "optimizer.lr": 1e-3, "train.steps": 10 },
    { "optimizer.lr": 3e-3, "train.steps": 5 },
    { "optimizer.lr": 3e-3, "train.steps": 10 },
  ]);
  assert.equal(plan.runs[8].arm, "swiglu");
  assert.equal(plan.runs[8].config.model.mlp, "swiglu");
  assert.equal(plan.runs[2].config.train.steps, 10);
});

Deno.test("plan zip pairs values", () => {
  const plan = expandPlan({
    experiment: "x",
    sweep: { zip: { "train.steps": [5, 10, 20], "schedule.warmupSteps": [1, 2, 4] } },
  }, "x.yaml");

  assert.equal(plan.runs.length, 3);
  assert.deepEqual(
    plan.runs.map((r) => [r.config.train.steps, r.config.schedule.warmupSteps]),
    [[5, 1], [10, 2], [20, 4]],
  );
});

Deno.test("plan grid times zip", () => {
  const plan = expandPlan({
    experiment: "x",
    sweep: { grid: { "model.mlp": ["gelu", "swiglu"] }, zip: { "train.steps": [5, 10] } },
  }, "x.yaml");

  assert.equal(plan.runs.length, 4);
  assert.equal(plan.runs[1].group, "base model.mlp=gelu train.steps=10");
});

Deno.test("plan seeds list and default", () => {
  const listed = expandPlan({ experiment: "x", seeds: [7, 42] }, "x.yaml");
  const single = expandPlan({ experiment: "x", seed: 5 }, "x.yaml");

  assert.deepEqual(listed.runs.map((r) => r.config.seed), [7, 42]);
  assert.deepEqual(single.runs.map((r) => r.seed), [5]);
  assert.equal(single.planned, false);
  assert.equal(listed.planned, true);
});

Deno.test("plan run ids are stable", () => {
  const raw = { experiment: "x", arms: { a: {}, b: { "model.dModel": 64 } }, seeds: 2 };
  const first = expandPlan(raw, "x.yaml").runs.map((r) => r.id);
  const second = expandPlan(structuredClone(raw), "x.yaml").runs.map((r) => r.id);

  assert.deepEqual(first, second);
  assert.match(first[0], /^a-s0-[0-9a-f]{12}$/);
  assert.equal(new Set(first).size, 4);
});

Deno.test("plan nested arm overrides", () => {
  const plan = expandPlan({ experiment: "x", arms: { a: { model: { mlp: "swiglu" } } } }, "x");

  assert.equal(plan.runs[0].config.model.mlp, "swiglu");
});

Deno.test("plan baseline defaults", () => {
  const named = expandPlan({ experiment: "x", arms: { b: {}, baseline: {} } }, "x");
  const first = expandPlan({ experiment: "x", arms: { b: {}, c: {} } }, "x");

  assert.equal(named.baseline, "baseline");
  assert.equal(first.baseline, "b");
});

Deno.test("plan set overrides win over arms", () => {
  const raw = { experiment: "x", arms: { a: { "train.steps": 50 } } };
  const plan = expandPlan(raw, "x", ["train.steps=3", "seeds=3"]);

  assert.deepEqual(plan.runs.map((r) => r.config.train.steps), [3, 3, 3]);
});

Deno.test("override typing by schema", async () => {
  const path = join(TEMP_ROOT, "typing.yaml");
  await Deno.writeTextFile(path, "experiment: x\n");
  const { config } = await loadConfig(path, [
    "experiment=001",
    "train.steps=10",
    "optimizer.lr=1e-3",
    "model.tieEmbeddings=false",
    "output.dir=123",
  ]);

  assert.equal(config.experiment, "001");
  assert.equal(config.train.steps, 10);
  assert.equal(config.optimizer.lr, 1e-3);
  assert.equal(config.model.tieEmbeddings, false);
  assert.equal(config.output.dir, "123");
});

Deno.test("override wrong type names set", async () => {
  const path = join(TEMP_ROOT, "wrong.yaml");
  await Deno.writeTextFile(path, "experiment: x\n");
  let error: Error | undefined;
  try {
    await loadConfig(path, ["train.steps=many"]);
  } catch (caught) {
    error = caught as Error;
  }

  assert.ok(error instanceof UserError);
  assert.match(error.message, /train\.steps: expected an integer, got "many" \(from --set\)/);
});

Deno.test("extends merges mappings and replaces lists", async () => {
  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT });
  await Deno.mkdir(join(dir, "bases"));
  await Deno.writeTextFile(
    join(dir, "bases", "a.yaml"),
    "experiment: a\nmodel: { dModel: 64, numHeads: 2 }\nseeds: [1, 2, 3]\n",
  );
  await Deno.writeTextFile(
    join(dir, "bases", "b.yaml"),
    "model: { numHeads: 4 }\ntrain: { steps: 7 }\n",
  );
  await Deno.writeTextFile(
    join(dir, "top.yaml"),
    "extends: [bases/a.yaml, bases/b.yaml]\nexperiment: top\nmodel: { mlp: swiglu }\nseeds: [9]\n",
  );
  const plan = await loadPlan(join(dir, "top.yaml"));
  const config = plan.runs[0].config;

  assert.equal(config.experiment, "top");
  assert.equal(config.model.dModel, 64);
  assert.equal(config.model.numHeads, 4);
  assert.equal(config.model.mlp, "swiglu");
  assert.equal(config.train.steps, 7);
  assert.deepEqual(plan.seeds, [9]);
});

Deno.test("selectRuns index and shards", () => {
  const plan = expandPlan({ experiment: "x", seeds: 5 }, "x");

  assert.deepEqual(selectRuns(plan, { index: 3 }).map((r) => r.index), [3]);
  assert.deepEqual(selectRuns(plan, { shard: parseShard("1/2") }).map((r) => r.index), [1, 3]);
  assert.deepEqual(selectRuns(plan, { shard: parseShard("0/2") }).map((r) => r.index), [0, 2, 4]);
  assert.match(errorOf(() => selectRuns(plan, { index: 5 })).message, /has 5 run\(s\)/);
  assert.match(errorOf(() => parseShard("2/2")).message, /0 <= i < n/);
});

Deno.test("registry get lists names", () => {
  const error = errorOf(() => schedules.get("linear"));

  assert.ok(error instanceof UserError);
  assert.equal(
    error.message,
    'unknown schedule "linear"; registered schedules: cosine, constant, wsd',
  );
});

Deno.test("registry rejects duplicate name", () => {
  const registry = new Registry<() => void>("probe", "probes");
  const entry = { name: "p", summary: "s", options: z.strictObject({}), create: () => {} };
  registry.register(entry);

  assert.match(errorOf(() => registry.register(entry)).message, /already registered/);
  assert.deepEqual(registry.names(), ["p"]);
});

Deno.test("registry entry registered later validates", () => {
  const before = errorOf(() =>
    parseConfig({ experiment: "x", optimizer: { name: "sgd-test" } }, "x")
  );
  assert.match(before.message, /unknown optimizer "sgd-test"; registered optimizers: adamw/);

  optimizers.register({
    name: "sgd-test",
    summary: "plain SGD, registered by a test",
    options: z.strictObject({ lr: z.number().gt(0).default(0.1), momentum: z.number().default(0) }),
    create: () => {
      throw new Error("not used");
    },
  });
  const config = parseConfig(
    { experiment: "x", optimizer: { name: "sgd-test", momentum: 0.9 } },
    "x",
  );
  const wrong = errorOf(() =>
    parseConfig({ experiment: "x", optimizer: { name: "sgd-test", beta1: 0.9 } }, "x")
  );

  assert.deepEqual(config.optimizer, { name: "sgd-test", lr: 0.1, momentum: 0.9 });
  assert.match(wrong.message, /optimizer\.beta1: unknown key; valid keys: name, lr, momentum/);
});
