import assert from "node:assert/strict";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { GroupedOptimizer } from "../../optim/grouped.ts";
import type { SgdGroupOptions } from "../../optim/optimizer.ts";
import { Tensor } from "../../tensor/mod.ts";

const backend = createCpuBackend({ precision: "f64", poison: true });

const OPTIONS: SgdGroupOptions = {
  algorithm: "sgd",
  lr: 0.1,
  weightDecay: 0,
  momentum: 0.9,
  nesterov: false,
};

async function run(options: SgdGroupOptions, initial: number, grads: number[]): Promise<number> {
  const p = Tensor.fromArray(backend, [initial], [1]);
  p.requiresGrad = true;
  p.persistent = true;
  const optimizer = new GroupedOptimizer([{ name: "all", params: new Map([["w", p]]), options }]);
  for (const g of grads) {
    p.grad?.dispose();
    p.grad = Tensor.fromArray(backend, [g], [1]);
    optimizer.update(1, null);
  }
  return (await p.data())[0];
}

const close = (actual: number, expected: number) =>
  assert.ok(Math.abs(actual - expected) < 1e-15, `${actual} is not ${expected}`);

Deno.test("sgd momentum by hand", async () => {
  // B₁ = 1, p₁ = 1 − 0.1; B₂ = 0.9·1 + 2 = 2.9, p₂ = p₁ − 0.29.
  close(await run(OPTIONS, 1, [1, 2]), 1 - 0.1 - 0.29);
});

Deno.test("sgd nesterov by hand", async () => {
  // d₁ = 1 + 0.9·1 = 1.9; d₂ = 2 + 0.9·2.9 = 4.61.
  close(await run({ ...OPTIONS, nesterov: true }, 1, [1, 2]), 1 - 0.19 - 0.461);
});

Deno.test("sgd weight decay adds to gradient", async () => {
  // g = 1 + 0.5·2 = 2 with no momentum.
  close(await run({ ...OPTIONS, momentum: 0, weightDecay: 0.5 }, 2, [1]), 2 - 0.2);
});

Deno.test("sgd without momentum has no state", () => {
  const p = Tensor.fromArray(backend, [1], [1]);
  const optimizer = new GroupedOptimizer([{
    name: "all",
    params: new Map([["w", p]]),
    options: { ...OPTIONS, momentum: 0 },
  }]);

  assert.equal(optimizer.stateTensors().size, 0);
});
