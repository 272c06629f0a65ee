import assert from "node:assert/strict";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createOptimizer } from "../../optim/create.ts";
import { assignGroups, describeGroups, matchGlob, paramRole } from "../../optim/groups.ts";
import { Tensor } from "../../tensor/mod.ts";

const backend = createCpuBackend({ precision: "f64" });

/** Parameter names and shapes of a one-block model with an MoE router, like the decoder LM's. */
const SHAPES: [string, number[]][] = [
  ["tokenEmbedding.weight", [16, 4]],
  ["positionEmbedding", [8, 4]],
  ["blocks.0.norm1.weight", [4]],
  ["blocks.0.attention.query.weight", [4, 4]],
  ["blocks.0.attention.output.weight", [4, 4]],
  ["blocks.0.attention.sinkLogit", [1]],
  ["blocks.0.mlp.up.weight", [8, 4]],
  ["blocks.0.mlp.up.bias", [8]],
  ["blocks.0.mlp.gate.weight", [8, 4]],
  ["blocks.0.mlp.down.weight", [4, 8]],
  ["blocks.0.moe.router.weight", [3, 4]],
  ["blocks.0.moe.experts.up", [3, 8, 4]],
  ["finalNorm.weight", [4]],
  ["head.weight", [16, 4]],
];

function model(): Map<string, Tensor> {
  return new Map(SHAPES.map(([name, shape]) => [name, Tensor.zeros(backend, shape)]));
}

function groupOf(
  groups: { name: string; params: Map<string, Tensor> }[],
  param: string,
): string | undefined {
  return groups.find((g) => g.params.has(param))?.name;
}

Deno.test("matchGlob single segment star", () => {
  assert.equal(matchGlob("blocks.*.mlp.up.weight", "blocks.12.mlp.up.weight"), true);
  assert.equal(matchGlob("blocks.*.weight", "blocks.0.mlp.weight"), false);
  assert.equal(matchGlob("blocks.0.attention.*", "blocks.0.attention.query.weight"), false);
  assert.equal(matchGlob("blocks.0.mlp.*.weight", "blocks.0.mlp.gate.weight"), true);
  assert.equal(matchGlob("*Embedding.weight", "tokenEmbedding.weight"), true);
});

Deno.test("matchGlob double star spans segments", () => {
  assert.equal(matchGlob("blocks.**.weight", "blocks.0.mlp.up.weight"), true);
  assert.equal(matchGlob("blocks.**.weight", "blocks.weight"), true);
  assert.equal(matchGlob("**", "head.weight"), true);
  assert.equal(matchGlob("**.bias", "blocks.0.mlp.up.bias"), true);
  assert.equal(matchGlob("**.bias", "blocks.0.mlp.up.weight"), false);
});

Deno.test("matchGlob escapes regex characters", () => {
  assert.equal(matchGlob("a+b.weight", "a+b.weight"), true);
  assert.equal(matchGlob("a+b.weight", "aab.weight"), false);
});

Deno.test("paramRole default classes", () => {
  const params = model();
  const role = (name: string) => paramRole(name, params.get(name)!);

  assert.equal(role("tokenEmbedding.weight"), "embedding");
  assert.equal(role("positionEmbedding"), "embedding");
  assert.equal(role("blocks.0.norm1.weight"), "vector");
  assert.equal(role("blocks.0.attention.sinkLogit"), "vector");
  assert.equal(role("blocks.0.attention.query.weight"), "hidden");
  assert.equal(role("blocks.0.mlp.gate.weight"), "hidden");
  assert.equal(role("blocks.0.moe.experts.up"), "hidden");
  assert.equal(role("blocks.0.moe.router.weight"), "router");
  assert.equal(role("head.weight"), "head");
});

Deno.test("assignGroups muon defaults", () => {
  const { groups, warnings } = assignGroups(model(), [], "muon");

  assert.deepEqual(groups.map((g) => g.name), ["muon", "adamw", "adamwNoDecay"]);
  assert.deepEqual([...groups[0].params.keys()], [
    "blocks.0.attention.query.weight",
    "blocks.0.attention.output.weight",
    "blocks.0.mlp.up.weight",
    "blocks.0.mlp.gate.weight",
    "blocks.0.mlp.down.weight",
    "blocks.0.moe.experts.up",
  ]);
  assert.deepEqual([...groups[1].params.keys()], ["blocks.0.moe.router.weight", "head.weight"]);
  assert.equal(groups[2].weightDecay, 0);
  assert.equal(groupOf(groups, "tokenEmbedding.weight"), "adamwNoDecay");
  assert.equal(groupOf(groups, "blocks.0.mlp.up.bias"), "adamwNoDecay");
  assert.deepEqual(warnings, []);
});

Deno.test("assignGroups adamw defaults", () => {
  const { groups } = assignGroups(model(), [], "adamw");

  assert.deepEqual(groups.map((g) => g.name), ["adamw", "adamwNoDecay"]);
  assert.equal(groupOf(groups, "blocks.0.mlp.up.weight"), "adamw");
  assert.equal(groupOf(groups, "head.weight"), "adamw");
  assert.equal(groupOf(groups, "blocks.0.moe.router.weight"), "adamw");
  assert.equal(groupOf(groups, "finalNorm.weight"), "adamwNoDecay");
});

Deno.test("assignGroups rule by glob and rank", () => {
  const rules = [{
    name: "mlp",
    params: "blocks.*.mlp.**",
    rank: 2,
    algorithm: "sgd" as const,
    lr: 0.5,
  }];

  const { groups } = assignGroups(model(), rules, "adamw");

  assert.deepEqual([...groups[0].params.keys()], [
    "blocks.0.mlp.up.weight",
    "blocks.0.mlp.gate.weight",
    "blocks.0.mlp.down.weight",
  ]);
  assert.equal(groups[0].lr, 0.5);
  assert.equal(groupOf(groups, "blocks.0.mlp.up.bias"), "adamwNoDecay");
});

Deno.test("assignGroups rule matching nothing warns", () => {
  const rules = [{ name: "experts", params: "blocks.*.moe.expert.*", algorithm: "muon" as const }];

  const { warnings } = assignGroups(model(), rules, "adamw");

  assert.deepEqual(warnings, [
    'optimizer groups: rule "experts" (params "blocks.*.moe.expert.*") matches no parameter',
  ]);
});

Deno.test("assignGroups two rules conflict", () => {
  const rules = [
    { name: "attention", params: "blocks.*.attention.**", algorithm: "adamw" as const },
    { name: "queries", params: "**.query.weight", algorithm: "muon" as const },
  ];

  assert.throws(
    () => assignGroups(model(), rules, "adamw"),
    /parameter blocks\.0\.attention\.query\.weight matches rule "attention" .* and rule "queries"/,
  );
});

Deno.test("assignGroups vector to muon throws", () => {
  const rules = [{ name: "everything", params: "blocks.**", algorithm: "muon" as const }];

  assert.throws(
    () => assignGroups(model(), rules, "muon"),
    /rule "everything" .* sends blocks\.0\.norm1\.weight \[4\] to Muon/,
  );
});

Deno.test("assignGroups duplicate rule names throw", () => {
  const rules = [
    { name: "a", params: "head.*", algorithm: "adamw" as const },
    { name: "a", params: "finalNorm.*", algorithm: "adamw" as const },
  ];

  assert.throws(() => assignGroups(model(), rules, "adamw"), /two rules are named "a"/);
});

Deno.test("createOptimizer fills group options", () => {
  const { optimizer } = createOptimizer(model(), {
    name: "muon",
    lr: 3e-3,
    weightDecay: 0.1,
    muon: { lr: 0.02, scaleRule: "original" },
    groups: [{ name: "head", params: "head.weight", algorithm: "adamw", lr: 1e-3, weightDecay: 0 }],
  });
  const options = new Map(optimizer.groups.map((g) => [g.name, g.options]));

  assert.deepEqual([...options.keys()], ["head", "muon", "adamw", "adamwNoDecay"]);
  assert.deepEqual(options.get("muon"), {
    algorithm: "muon",
    lr: 0.02,
    weightDecay: 0.1,
    momentum: 0.95,
    nesterov: true,
    nsSteps: 5,
    scaleRule: "original",
    momentumWarmup: null,
  });
  assert.equal(options.get("head")!.lr, 1e-3);
  assert.equal(options.get("head")!.weightDecay, 0);
  assert.equal(options.get("adamw")!.lr, 3e-3);
  assert.equal(options.get("adamwNoDecay")!.weightDecay, 0);
});

Deno.test("createOptimizer accepts trainer config", () => {
  const config = {
    name: "adamw" as const,
    lr: 3e-3,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: 0.1,
    gradClip: 1,
  };

  const { optimizer, warnings } = createOptimizer(model(), config);

  assert.deepEqual(optimizer.groups.map((g) => g.name), ["adamw", "adamwNoDecay"]);
  assert.deepEqual(warnings, []);
});

Deno.test("createOptimizer state names per algorithm", () => {
  const { optimizer } = createOptimizer(model(), { name: "muon", lr: 1e-3 });
  const names = [...optimizer.stateTensors().keys()];

  assert.ok(names.includes("muon.momentum.blocks.0.mlp.up.weight"));
  assert.ok(names.includes("adamw.m.head.weight"));
  assert.ok(names.includes("adamw.v.tokenEmbedding.weight"));
  assert.ok(!names.includes("adamw.m.blocks.0.mlp.up.weight"));
  assert.equal(names.length, 6 + 2 * (SHAPES.length - 6));
});

Deno.test("describeGroups lines", () => {
  const params = model();
  const { optimizer } = createOptimizer(params, {
    name: "adamw",
    lr: 0.01,
    groups: [{ name: "norms", params: "**.norm*.weight", algorithm: "adamw", weightDecay: 0 }],
  });

  const lines = describeGroups(optimizer.groups, params);

  assert.equal(lines[0], "group norms: adamw lr 0.01 weightDecay 0, 1 tensors, 4 values");
  assert.equal(lines[1], "  blocks.0.norm1.weight [4] -> norms");
  assert.equal(lines.length, optimizer.groups.length + params.size);
});
