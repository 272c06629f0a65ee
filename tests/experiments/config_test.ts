import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import YAML from "yaml";
import {
  applyOverride,
  configHash,
  type ExperimentConfig,
  loadConfig,
  parseConfig,
} from "../../experiments/config.ts";
import { UserError } from "../../experiments/errors.ts";

const FIXTURES = new URL("../fixtures/bad-configs/", import.meta.url);
const QUICKSTART = new URL("../../configs/quickstart.yaml", import.meta.url);

/** Writes `text` to a temporary YAML file and loads it. */
async function loadText(text: string, overrides: string[] = []) {
  const path = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    await Deno.writeTextFile(path, text);
    return await loadConfig(path, overrides);
  } finally {
    await Deno.remove(path);
  }
}

/** Returns the error thrown by `action`; fails when it does not throw. */
async function errorOf(action: () => unknown): Promise<Error> {
  try {
    await action();
  } catch (error) {
    assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
    return error;
  }
  assert.fail("expected an error, but none was thrown");
}

Deno.test("parseConfig fills defaults", () => {
  const config = parseConfig({ experiment: "x" }, "test");

  assert.equal(config.seed, 0);
  assert.equal(config.backend, "webgpu");
  assert.deepEqual(config.task, {
    name: "lm",
    corpus: "moby-dick",
    path: "",
    seqLen: 64,
    valFraction: 0.1,
    tokenizer: "byte",
    vocabSize: 512,
  });
  assert.equal(config.model.dModel, 96);
  assert.equal(config.model.mlp, "gelu");
  assert.equal(config.model.tieEmbeddings, true);
  assert.equal(config.optimizer.lr, 3e-3);
  assert.equal(config.optimizer.gradClip, 1);
  assert.equal(config.schedule.name, "cosine");
  assert.equal(config.train.steps, 600);
  assert.equal(config.output.dir, "results");
});

Deno.test("parseConfig partial section keeps other defaults", () => {
  const config = parseConfig({ experiment: "x", model: { mlp: "swiglu" } }, "test");

  assert.equal(config.model.mlp, "swiglu");
  assert.equal(config.model.numHeads, 4);
});

Deno.test("quickstart config equals defaults", async () => {
  const { config } = await loadConfig(QUICKSTART.pathname);

  assert.deepEqual(config, parseConfig({ experiment: "quickstart" }, "defaults"));
});

Deno.test("yaml seed 010 is decimal 10", async () => {
  const { config } = await loadText("experiment: x\nseed: 010\n");

  assert.equal(config.seed, 10);
});

Deno.test("yaml no on y stay strings", async () => {
  const { config } = await loadText("experiment: y\noutput:\n  dir: on\n");
  const error = await errorOf(() => loadText("experiment: x\nmodel:\n  mlp: no\n"));

  assert.equal(config.experiment, "y");
  assert.equal(config.output.dir, "on");
  assert.match(error.message, /model\.mlp: expected one of gelu, swiglu, got "no"/);
});

Deno.test("yaml exponent without dot is a number", async () => {
  const { config } = await loadText("experiment: x\noptimizer:\n  lr: 3e-4\n");

  assert.equal(config.optimizer.lr, 3e-4);
});

Deno.test("loadConfig text round-trips", async () => {
  const { config, text } = await loadConfig(QUICKSTART.pathname, ["model.norm=layernorm"]);

  assert.deepEqual(parseConfig(YAML.parse(text), "text"), config);
});

Deno.test("loadConfig missing file", async () => {
  const error = await errorOf(() => loadConfig("configs/does-not-exist.yaml"));

  assert.ok(error instanceof UserError);
  assert.match(error.message, /configs\/does-not-exist\.yaml/);
  assert.match(error.message, /ls configs\//);
});

Deno.test("loadConfig directory is unreadable", async () => {
  const dir = await Deno.makeTempDir();
  const error = await errorOf(() => loadConfig(dir));
  await Deno.remove(dir);

  assert.ok(error instanceof UserError);
  assert.ok(error.message.includes(dir));
});

Deno.test("loadConfig empty file", async () => {
  const error = await errorOf(() => loadText(""));

  assert.ok(error instanceof UserError);
  assert.match(error.message, /experiment: <name>/);
});

Deno.test("loadConfig applies overrides in order", async () => {
  const { config } = await loadConfig(QUICKSTART.pathname, [
    "train.steps=10",
    "model.mlp=swiglu",
    "train.steps=20",
  ]);

  assert.equal(config.train.steps, 20);
  assert.equal(config.model.mlp, "swiglu");
});

Deno.test("loadConfig invalid override value names --set", async () => {
  const error = await errorOf(() => loadConfig(QUICKSTART.pathname, ["train.steps=0"]));

  assert.match(error.message, /train\.steps: expected an integer >= 1, got 0 \(from --set\)/);
});

Deno.test("parseConfig lists every invalid value", () => {
  const raw = { experiment: "x", train: { steps: 0, batchSize: "many" }, backend: "tpu" };
  const lines = captureSync(() => parseConfig(raw, "x.yaml")).message.split("\n");

  assert.equal(lines.length, 3);
  assert.ok(lines.every((line) => line.startsWith("x.yaml: ")));
});

Deno.test("parseConfig rejects unknown keys at top level", () => {
  const error = captureSync(() => parseConfig({ experiment: "x", steps: 10 }, "x.yaml"));

  assert.match(error.message, /x\.yaml: steps: unknown key; valid keys: experiment, seed,/);
});

Deno.test("parseConfig rejects experiment dot-dot", () => {
  const error = captureSync(() => parseConfig({ experiment: ".." }, "x.yaml"));

  assert.match(error.message, /experiment: must not be '\.' or '\.\.'/);
});

Deno.test("parseConfig accepts gradClip zero", () => {
  const config = parseConfig({ experiment: "x", optimizer: { gradClip: 0 } }, "x.yaml");

  assert.equal(config.optimizer.gradClip, 0);
});

Deno.test("parseConfig rope with even head size", () => {
  const config = parseConfig({ experiment: "x", model: { dModel: 64, numHeads: 8 } }, "x.yaml");

  assert.equal(config.model.dModel / config.model.numHeads, 8);
});

Deno.test("parseConfig odd head size without rope", () => {
  const raw = { experiment: "x", model: { dModel: 36, numHeads: 4, position: "learned" } };
  const config = parseConfig(raw, "x.yaml");

  assert.equal(config.model.position, "learned");
});

// Each bad config: the fragments its error message must contain (the path, the value, the fix).
const BAD_CONFIGS: Record<string, string[]> = {
  "unknown-key.yaml": ["model.numHead: unknown key", "valid keys: dModel, numLayers, numHeads,"],
  "unknown-section.yaml": ["trainer: unknown key", "valid keys: experiment, seed, backend, task"],
  "heads-not-divisor.yaml": [
    "model.numHeads is 5 but model.dModel is 96",
    "choose numHeads that divides dModel",
  ],
  "rope-odd-head-size.yaml": [
    "model.position is rope",
    "36 / 4 = 9 is odd",
    "or set model.position to learned or none",
  ],
  "infinite-lr.yaml": ["optimizer.lr: expected a finite number, got Infinity"],
  "nan-lr.yaml": ["optimizer.lr: expected a finite number, got NaN"],
  "unknown-backend.yaml": ['backend: expected one of webgpu, cpu, got "gpu"'],
  "yaml-syntax.yaml": ["yaml-syntax.yaml:3:10: invalid YAML", "the line is: steps: 10"],
  "missing-experiment.yaml": ["experiment: required but missing", "a string"],
  "yes-boolean.yaml": ['model.tieEmbeddings: expected true or false, got "yes"'],
  "val-fraction-too-big.yaml": ["task.valFraction: expected a number <= 0.5, got 0.6"],
  "fractional-steps.yaml": ["train.steps: expected an integer, got 10.5"],
  "experiment-name-path.yaml": ["experiment: must contain only letters, digits", "../escape"],
  "top-level-list.yaml": ["expected a mapping of keys", "got a list"],
  "negative-seed.yaml": ["seed: expected an integer >= 0, got -1"],
};

for (const [fixture, fragments] of Object.entries(BAD_CONFIGS)) {
  Deno.test(`bad config ${fixture}`, async () => {
    const path = join(FIXTURES.pathname, fixture);
    const error = await errorOf(() => loadConfig(path));

    assert.ok(error instanceof UserError, `expected UserError, got ${error.name}`);
    assert.ok(error.message.includes(fixture), `message does not name the file: ${error.message}`);
    for (const fragment of fragments) {
      assert.ok(error.message.includes(fragment), `missing "${fragment}" in: ${error.message}`);
    }
  });
}

Deno.test("bad config fixtures all have expectations", async () => {
  // Files with "# expect:" lines are checked by bad_config_corpus_test.ts.
  const names: string[] = [];
  for await (const entry of Deno.readDir(FIXTURES)) {
    const text = await Deno.readTextFile(new URL(entry.name, FIXTURES));
    if (!text.startsWith("# expect:")) names.push(entry.name);
  }

  assert.deepEqual(names.sort(), Object.keys(BAD_CONFIGS).sort());
});

Deno.test("applyOverride number value", () => {
  const raw = applyOverride({ experiment: "x" }, "train.steps=10");

  assert.deepEqual(raw, { experiment: "x", train: { steps: 10 } });
});

Deno.test("applyOverride string value", () => {
  const raw = applyOverride({ experiment: "x" }, "model.mlp=swiglu");

  assert.deepEqual(raw, { experiment: "x", model: { mlp: "swiglu" } });
});

Deno.test("applyOverride exponent and boolean values", () => {
  const raw = applyOverride(applyOverride({}, "optimizer.lr=1e-3"), "model.tieEmbeddings=false");

  assert.deepEqual(raw, { optimizer: { lr: 1e-3 }, model: { tieEmbeddings: false } });
});

Deno.test("applyOverride value containing equals", () => {
  const raw = applyOverride({}, "output.dir=a=b");

  assert.deepEqual(raw, { output: { dir: "a=b" } });
});

Deno.test("applyOverride leaves input unchanged", () => {
  const input = { experiment: "x", train: { steps: 5 } };
  applyOverride(input, "train.steps=10");

  assert.deepEqual(input, { experiment: "x", train: { steps: 5 } });
});

Deno.test("applyOverride unknown key names valid keys", () => {
  const error = captureSync(() => applyOverride({}, "train.step=10"));

  assert.ok(error instanceof UserError);
  assert.match(error.message, /unknown key "step" in train/);
  assert.match(error.message, /valid keys: steps, batchSize, logEvery, evalEvery, evalBatches/);
});

Deno.test("applyOverride unknown top-level key", () => {
  const error = captureSync(() => applyOverride({}, "trainer.steps=10"));

  assert.match(error.message, /unknown key "trainer" at the top level; valid keys: experiment,/);
});

Deno.test("applyOverride key below a value", () => {
  const error = captureSync(() => applyOverride({}, "seed.value=1"));

  assert.match(error.message, /seed is a value, not a section/);
});

Deno.test("applyOverride section rejected", () => {
  const error = captureSync(() => applyOverride({}, "model=small"));

  assert.match(error.message, /model is a section; set one of model\.dModel, model\.numLayers/);
});

Deno.test("applyOverride missing equals", () => {
  const error = captureSync(() => applyOverride({}, "train.steps"));

  assert.match(error.message, /--set expects key\.path=value/);
});

Deno.test("applyOverride collection value rejected", () => {
  const error = captureSync(() => applyOverride({}, "train.steps=[1, 2]"));

  assert.match(error.message, /expected a single value/);
});

Deno.test("applyOverride section that is not a mapping", () => {
  const error = captureSync(() => applyOverride({ model: 3 }, "model.dModel=64"));

  assert.match(error.message, /model is 3 in the config, not a mapping/);
});

Deno.test("configHash is 12 hex digits", () => {
  const hash = configHash(parseConfig({ experiment: "x" }, "test"));

  assert.match(hash, /^[0-9a-f]{12}$/);
});

Deno.test("configHash ignores key order", () => {
  const config = parseConfig({ experiment: "x" }, "test");
  const reordered = Object.fromEntries(Object.entries(config).reverse()) as ExperimentConfig;

  assert.equal(configHash(reordered), configHash(config));
});

Deno.test("configHash changes with a value", () => {
  const base = parseConfig({ experiment: "x" }, "test");
  const changed = parseConfig({ experiment: "x", seed: 1 }, "test");

  assert.notEqual(configHash(changed), configHash(base));
});

Deno.test("configHash hashes sorted compact JSON", () => {
  // A change to the canonical form would rename every run, so the exact form is checked here.
  const config = { seed: 1, experiment: "x", model: { numHeads: 2, dModel: 8 } };
  const canonical = '{"experiment":"x","model":{"dModel":8,"numHeads":2},"seed":1}';
  const expected = createHash("sha256").update(canonical).digest("hex").slice(0, 12);

  assert.equal(configHash(config as unknown as ExperimentConfig), expected);
});

function captureSync(action: () => unknown): Error {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof Error);
    return error;
  }
  assert.fail("expected an error, but none was thrown");
}
