import assert from "node:assert/strict";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { GroupedOptimizer } from "../../optim/grouped.ts";
import type { AdamWGroupOptions, StateArray } from "../../optim/optimizer.ts";
import { Tensor } from "../../tensor/mod.ts";

const backend = createCpuBackend({ precision: "f64", poison: true });

const OPTIONS: AdamWGroupOptions = {
  algorithm: "adamw",
  lr: 0.1,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0,
};

function parameter(values: number[]): Tensor {
  const p = Tensor.fromArray(backend, values, [values.length]);
  p.requiresGrad = true;
  p.persistent = true;
  return p;
}

function setGrad(p: Tensor, values: number[]): void {
  p.grad?.dispose();
  p.grad = Tensor.fromArray(backend, values, p.shape);
  p.grad.persistent = true;
}

async function values(t: Tensor): Promise<number[]> {
  return [...await t.data()];
}

/** AdamW as torch.optim.AdamW documents it, in float64 on the host. */
function referenceAdamW(
  theta: number[],
  grads: number[][],
  lrs: number[],
  o: { beta1: number; beta2: number; eps: number; weightDecay: number },
): number[] {
  const p = [...theta];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  grads.forEach((g, index) => {
    const t = index + 1;
    const lr = lrs[index];
    for (let i = 0; i < p.length; i++) {
      p[i] -= lr * o.weightDecay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      const mHat = m[i] / (1 - o.beta1 ** t);
      const vHat = v[i] / (1 - o.beta2 ** t);
      p[i] -= (lr * mHat) / (Math.sqrt(vHat) + o.eps);
    }
  });
  return p;
}

Deno.test("adamw first update has magnitude lr", async () => {
  const p = parameter([1]);
  const optimizer = new GroupedOptimizer([{
    name: "all",
    params: new Map([["scalar", p]]),
    options: OPTIONS,
  }]);
  setGrad(p, [1]);

  optimizer.update(1, null);

  // m̂ = 1 and v̂ = 1 at step 1, so the step is lr / (1 + eps).
  const [after] = await values(p);
  assert.ok(Math.abs(1 - after - 0.1 / (1 + 1e-8)) < 1e-15, `update was ${1 - after}`);
  assert.equal(optimizer.step, 1);
});

Deno.test("adamw matches reference with decay and schedule", async () => {
  const options = { ...OPTIONS, lr: 0.01, beta2: 0.95, weightDecay: 0.1 };
  const p = parameter([1, -2, 0.5]);
  const optimizer = new GroupedOptimizer([{ name: "all", params: new Map([["w", p]]), options }]);
  const grads = [[0.5, -1, 0], [0.25, 3, -0.1], [-1, 0.2, 0.3]];
  const factors = [1, 0.5, 0.25];

  for (let i = 0; i < grads.length; i++) {
    setGrad(p, grads[i]);
    optimizer.update(factors[i], null);
  }

  const expected = referenceAdamW([1, -2, 0.5], grads, factors.map((f) => f * 0.01), options);
  const actual = await values(p);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) < 1e-14,
      `element ${i}: ${actual[i]} vs ${expected[i]}`,
    );
  }
});

Deno.test("adamw gradScale multiplies gradient", async () => {
  const scaled = parameter([1, 2]);
  const halved = parameter([1, 2]);
  const a = new GroupedOptimizer([{
    name: "a",
    params: new Map([["w", scaled]]),
    options: OPTIONS,
  }]);
  const b = new GroupedOptimizer([{
    name: "b",
    params: new Map([["w", halved]]),
    options: OPTIONS,
  }]);
  const half = Tensor.fromArray(backend, [0.5], [1]);

  for (const grad of [[1, -3], [2, 0.5]]) {
    setGrad(scaled, grad);
    setGrad(halved, grad.map((g) => g / 2));
    a.update(1, half);
    b.update(1, null);
  }

  assert.deepEqual(await values(scaled), await values(halved));
});

Deno.test("adamw resume continues step counter", async () => {
  const grads = [[1, -1], [0.5, 2], [-0.3, 0.7], [0.1, 0.1]];
  const uninterrupted = parameter([0.3, -0.4]);
  const a = new GroupedOptimizer([{
    name: "all",
    params: new Map([["w", uninterrupted]]),
    options: OPTIONS,
  }]);
  for (const g of grads) {
    setGrad(uninterrupted, g);
    a.update(1, null);
  }

  // Two updates, save, then a fresh optimizer over a restored parameter takes the last two.
  const first = parameter([0.3, -0.4]);
  const b = new GroupedOptimizer([{
    name: "all",
    params: new Map([["w", first]]),
    options: OPTIONS,
  }]);
  for (const g of grads.slice(0, 2)) {
    setGrad(first, g);
    b.update(1, null);
  }
  const saved = new Map<string, Float64Array>();
  for (const [name, t] of b.stateTensors()) saved.set(name, Float64Array.from(await t.data()));
  const resumedParam = parameter(await values(first));
  const c = new GroupedOptimizer([{
    name: "all",
    params: new Map([["w", resumedParam]]),
    options: OPTIONS,
  }]);
  c.loadState(saved, b.step);
  for (const g of grads.slice(2)) {
    setGrad(resumedParam, g);
    c.update(1, null);
  }

  assert.deepEqual([...saved.keys()], ["adamw.m.w", "adamw.v.w"]);
  assert.equal(c.step, 4);
  assert.deepEqual(await values(resumedParam), await values(uninterrupted));
});

Deno.test("adamw skips parameters without gradient", async () => {
  const p = parameter([1, 2]);
  const optimizer = new GroupedOptimizer([{
    name: "all",
    params: new Map([["w", p]]),
    options: { ...OPTIONS, weightDecay: 0.5 },
  }]);

  optimizer.update(1, null);

  assert.deepEqual(await values(p), [1, 2]);
  assert.equal(optimizer.step, 1);
});

Deno.test("adamw loadState rejects mismatched state", () => {
  const p = parameter([1, 2]);
  const optimizer = new GroupedOptimizer([{
    name: "all",
    params: new Map([["w", p]]),
    options: OPTIONS,
  }]);
  const good = new Float64Array(2);

  assert.throws(
    () => optimizer.loadState(new Map([["adamw.m.w", good]]), 1),
    /missing adamw\.v\.w/,
  );
  assert.throws(
    () =>
      optimizer.loadState(
        new Map([["adamw.m.w", good], ["adamw.v.w", good], ["muon.momentum.x", good]]),
        1,
      ),
    /unexpected muon\.momentum\.x/,
  );
  assert.throws(
    () =>
      optimizer.loadState(new Map([["adamw.m.w", good], ["adamw.v.w", new Float64Array(3)]]), 1),
    /adamw\.v\.w has 3 values but needs 2/,
  );
  assert.throws(
    () =>
      optimizer.loadState(
        new Map<string, StateArray>([["adamw.m.w", { shape: [2, 1], data: good }], [
          "adamw.v.w",
          good,
        ]]),
        1,
      ),
    /saved with shape \[2, 1\]/,
  );
});

Deno.test("adamw rejects invalid options", () => {
  const p = parameter([1]);
  const params = new Map([["w", p]]);

  assert.throws(
    () => new GroupedOptimizer([{ name: "g", params, options: { ...OPTIONS, beta1: 1 } }]),
    /group "g" has beta1 1/,
  );
  assert.throws(
    () => new GroupedOptimizer([{ name: "g", params, options: { ...OPTIONS, lr: NaN } }]),
    /has lr NaN/,
  );
});
