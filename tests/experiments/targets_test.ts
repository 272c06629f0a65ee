/** Steps-to-target: the plan key, its validation and the report's table. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { loadPlan } from "../../experiments/plan.ts";
import { stepsToTarget } from "../../experiments/report/summarize.ts";

const rows = [
  { step: 10, val_loss: "", train_loss: 3.0 },
  { step: 20, val_loss: 2.6, train_loss: 2.5 },
  { step: 30, val_loss: 2.1, train_loss: 2.0 },
  { step: 40, val_loss: 1.9, train_loss: 1.8 },
];

Deno.test("stepsToTarget first crossing", () => {
  assert.equal(stepsToTarget(rows, "val_loss", 2.2), 30);
});

Deno.test("stepsToTarget never reached", () => {
  assert.ok(Number.isNaN(stepsToTarget(rows, "val_loss", 1.0)));
});

Deno.test("stepsToTarget exact value counts", () => {
  assert.equal(stepsToTarget(rows, "train_loss", 2.5), 20);
});

async function planFrom(text: string) {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "plan.yaml");
  await Deno.writeTextFile(path, text);
  return loadPlan(path, []);
}

Deno.test("plan targets parsed", async () => {
  const plan = await planFrom("experiment: t\nseeds: 2\ntargets: { val_loss: 2.2 }\n");
  assert.deepEqual(plan.targets, { val_loss: 2.2 });
});

Deno.test("plan targets unknown metric rejected", async () => {
  await assert.rejects(
    planFrom("experiment: t\nseeds: 2\ntargets: { val_acc: 0.9 }\n"),
    /targets\.val_acc: not a logged metric; choose one of/,
  );
});

Deno.test("plan targets non-number rejected", async () => {
  await assert.rejects(
    planFrom("experiment: t\nseeds: 2\ntargets: { val_loss: low }\n"),
    /targets\.val_loss: expected a finite number/,
  );
});
