/** Finite-difference gradient checks of every differentiable op, on the float64 CPU backend. */

import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import * as T from "../../tensor/mod.ts";
import { Rng, Tensor } from "../../tensor/mod.ts";
import { gradcheck } from "../helpers/gradcheck.ts";

const backend = createCpuBackend({ precision: "f64" });

function positive(n: number, seed: number): Float64Array {
  return new Rng(seed).uniformArray(n, 0.5, 2);
}

/** Values whose gaps are far larger than the finite-difference step, so the argmax is stable. */
function distinct(n: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const order = Array.from({ length: n }, (_, i) => i).sort(() => rng.uniform() - 0.5);
  return Float64Array.from(order, (r) => r * 0.1 + rng.uniform() * 0.01);
}

const unaryCases: [string, (x: Tensor) => Tensor, Float64Array | undefined][] = [
  ["neg", T.neg, undefined],
  ["exp", T.exp, undefined],
  ["log", T.log, positive(15, 1)],
  ["sqrt", T.sqrt, positive(15, 2)],
  ["rsqrt", T.rsqrt, positive(15, 3)],
  ["tanh", T.tanh, undefined],
  ["relu", T.relu, distinct(15, 4).map((v) => v - 0.7)],
  ["gelu", T.gelu, undefined],
  ["silu", T.silu, undefined],
  ["sigmoid", T.sigmoid, undefined],
  ["square", T.square, undefined],
  ["pow 3", (x) => T.pow(x, 3), undefined],
  ["pow 1.5", (x) => T.pow(x, 1.5), positive(15, 5)],
  ["scale", (x) => T.scale(x, -2.5), undefined],
  ["addScalar", (x) => T.addScalar(x, 0.75), undefined],
];

for (const [name, fn, values] of unaryCases) {
  Deno.test(`gradcheck unary ${name}`, async () => {
    await gradcheck(backend, name, [{ shape: [3, 5], values }], fn);
  });
}

for (const op of ["add", "sub", "mul", "div"] as const) {
  Deno.test(`gradcheck binary ${op} broadcast`, async () => {
    const fn = { add: T.add, sub: T.sub, mul: T.mul, div: T.div }[op];
    const b = op === "div" ? positive(5, 6) : undefined;
    await gradcheck(backend, op, [{ shape: [2, 3, 5] }, { shape: [5], values: b }], fn);
    await gradcheck(backend, `${op} 1-axes`, [{ shape: [2, 1, 5] }, {
      shape: [3, 1],
      values: op === "div" ? positive(3, 7) : undefined,
    }], fn);
  });
}

Deno.test("gradcheck sum mean max axes", async () => {
  await gradcheck(backend, "sum0", [{ shape: [3, 4, 2] }], (x) => T.sum(x, 0));
  await gradcheck(backend, "sum1 keep", [{ shape: [3, 4, 2] }], (x) => T.sum(x, 1, true));
  await gradcheck(backend, "mean-1", [{ shape: [3, 4, 2] }], (x) => T.mean(x, -1));
  await gradcheck(
    backend,
    "max1",
    [{ shape: [3, 4, 2], values: distinct(24, 8) }],
    (x) => T.max(x, 1),
  );
});

Deno.test("gradcheck matmul transposes", async () => {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = transA ? [2, 5, 3] : [2, 3, 5];
      const b = transB ? [2, 4, 5] : [2, 5, 4];
      await gradcheck(
        backend,
        `batched ${transA} ${transB}`,
        [{ shape: a }, { shape: b }],
        (x, y) => T.matmul(x, y, { transA, transB }),
      );
      const w = transB ? [4, 5] : [5, 4];
      await gradcheck(
        backend,
        `weight ${transB}`,
        [{ shape: [2, 3, 5] }, { shape: w }],
        (x, y) => T.matmul(x, y, { transB }),
      );
    }
  }
});

Deno.test("gradcheck transpose slice concat", async () => {
  await gradcheck(backend, "transpose", [{ shape: [2, 3, 4] }], (x) => T.transpose(x, 0, 2));
  await gradcheck(backend, "slice", [{ shape: [3, 7] }], (x) => T.slice(x, 1, 2, 5));
  await gradcheck(
    backend,
    "concat",
    [{ shape: [2, 3] }, { shape: [2, 4] }],
    (x, y) => T.concat([x, y], 1),
  );
  await gradcheck(backend, "reshape", [{ shape: [2, 6] }], (x) => T.exp(x.reshape([3, 4])));
});

Deno.test("gradcheck softmax plain and causal", async () => {
  await gradcheck(backend, "softmax", [{ shape: [3, 5] }], (x) => T.softmax(x));
  await gradcheck(backend, "causal", [{ shape: [2, 4, 4] }], (x) => T.softmax(x, { causal: true }));
});

Deno.test("gradcheck layerNorm rmsNorm", async () => {
  await gradcheck(
    backend,
    "layerNorm",
    [{ shape: [3, 6] }, { shape: [6] }, { shape: [6] }],
    (x, g, b) => T.layerNorm(x, g, b, 1e-5),
  );
  await gradcheck(
    backend,
    "rmsNorm",
    [{ shape: [3, 6] }, { shape: [6] }],
    (x, g) => T.rmsNorm(x, g, 1e-5),
  );
});

Deno.test("gradcheck embedding with repeated ids", async () => {
  const ids = Tensor.fromArray(backend, new Int32Array([2, 0, 2, 4, 1, 2]), [2, 3]);
  await gradcheck(backend, "embedding", [{ shape: [5, 3] }], (table) => T.embedding(table, ids));
  ids.dispose();
});

Deno.test("gradcheck rope", async () => {
  const half = 3;
  const rng = new Rng(9);
  const cos = Tensor.fromArray(backend, rng.uniformArray(4 * half, -1, 1), [4, half], "f32");
  const sin = Tensor.fromArray(backend, rng.uniformArray(4 * half, -1, 1), [4, half], "f32");
  await gradcheck(backend, "rope", [{ shape: [2, 4, 2 * half] }], (x) => T.rope(x, cos, sin));
  cos.dispose();
  sin.dispose();
});

Deno.test("gradcheck crossEntropy with ignored rows", async () => {
  const targets = Tensor.fromArray(backend, new Int32Array([1, -100, 4, 0]), [4]);
  await gradcheck(backend, "crossEntropy", [{ shape: [4, 5] }], (x) => T.crossEntropy(x, targets));
  targets.dispose();
});
