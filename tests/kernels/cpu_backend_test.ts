/**
 * Tests of the CPU reference backend: hand-computed cases per op family, and central-difference
 * gradient checks in float64 for every backward op.
 *
 * Run: npx deno test -A tests/kernels/cpu_backend_test.ts
 */

import assert from "node:assert/strict";
import type { Backend, MatmulSpec, Storage, UnaryOp } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";

// --- helpers -------------------------------------------------------------------------------------

function f64Backend(): Backend {
  return createCpuBackend({ precision: "f64", poison: true });
}

function floats(backend: Backend, values: number[]): Storage {
  return backend.upload(new Float64Array(values), "f32");
}

function ints(backend: Backend, values: number[]): Storage {
  return backend.upload(new Int32Array(values), "i32");
}

async function values(backend: Backend, storage: Storage): Promise<number[]> {
  return Array.from(await backend.read(storage));
}

/** Fails at the first element with |actual − expected| > tol · (1 + |expected|) or a NaN. */
function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol = 1e-12,
  label = "values",
): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < actual.length; i++) {
    const error = Math.abs(actual[i] - expected[i]);
    if (!(error <= tol * (1 + Math.abs(expected[i])))) {
      assert.fail(
        `${label}[${i}] is ${actual[i]} but expected ${expected[i]} (tolerance ${tol})\n` +
          `actual:   [${Array.from(actual).join(", ")}]\nexpected: [${
            Array.from(expected).join(", ")
          }]`,
      );
    }
  }
}

/** Σ dy ⊙ y, the scalar whose gradient a backward op returns when given dy. */
async function weightedSum(backend: Backend, y: Storage, dy: number[]): Promise<number> {
  const yv = await values(backend, y);
  return yv.reduce((sum, v, i) => sum + v * dy[i], 0);
}

/** Central-difference gradient of `loss` at x. */
async function numericGradient(
  loss: (x: number[]) => Promise<number>,
  x: number[],
  h = 1e-6,
): Promise<number[]> {
  const grad: number[] = [];
  for (let i = 0; i < x.length; i++) {
    const plus = [...x];
    const minus = [...x];
    plus[i] += h;
    minus[i] -= h;
    grad.push((await loss(plus) - await loss(minus)) / (2 * h));
  }
  return grad;
}

const GRAD_TOL = 1e-6;

// --- memory --------------------------------------------------------------------------------------

Deno.test("liveStorages counts alloc and release", () => {
  const backend = f64Backend();
  const a = backend.alloc(4, "f32");
  const b = backend.upload(new Int32Array([1, 2]), "i32");
  assert.equal(backend.liveStorages(), 2);

  backend.release(a);
  assert.equal(backend.liveStorages(), 1);
  backend.release(b);
  assert.equal(backend.liveStorages(), 0);
});

Deno.test("alloc poison fills NaN and int min", async () => {
  const backend = createCpuBackend({ poison: true });
  const f = await values(backend, backend.alloc(3, "f32"));
  const i = await values(backend, backend.alloc(2, "i32"));
  assert.ok(f.every(Number.isNaN), `float poison: [${f.join(", ")}]`);
  assert.deepEqual(i, [-2147483648, -2147483648]);
});

Deno.test("precision picks the array type", async () => {
  const f32 = createCpuBackend();
  const f64 = createCpuBackend({ precision: "f64" });
  assert.ok((await f32.read(f32.alloc(1, "f32"))) instanceof Float32Array);
  assert.ok((await f64.read(f64.alloc(1, "f32"))) instanceof Float64Array);
  assert.ok((await f64.read(f64.alloc(1, "i32"))) instanceof Int32Array);
  assert.equal(f32.description, "cpu (TypeScript reference, float32)");
  assert.equal(f64.precision, "f64");
});

Deno.test("f32 precision rounds outputs", async () => {
  const backend = createCpuBackend();
  const y = backend.unary("scale", floats(backend, [1]), 0.1);
  assert.equal((await values(backend, y))[0], Math.fround(0.1));
});

Deno.test("read returns a copy", async () => {
  const backend = f64Backend();
  const x = floats(backend, [1, 2]);
  const first = await backend.read(x);
  first[0] = 99;
  assert.deepEqual(await values(backend, x), [1, 2]);
});

Deno.test("upload copies its input", async () => {
  const backend = f64Backend();
  const data = new Float64Array([1, 2]);
  const x = backend.upload(data, "f32");
  data[0] = 99;
  assert.deepEqual(await values(backend, x), [1, 2]);
});

Deno.test("upload rejects mismatched dtype", () => {
  const backend = f64Backend();
  assert.throws(() => backend.upload(new Float32Array([1]), "i32"), /Int32Array/);
  assert.throws(() => backend.upload(new Int32Array([1]), "f32"), /Float32Array/);
});

Deno.test("released storage use throws", () => {
  const backend = f64Backend();
  const x = floats(backend, [1]);
  backend.release(x);
  assert.throws(() => backend.unary("neg", x), /unary neg: x .* was already released/);
  assert.throws(() => backend.release(x), /already released/);
});

Deno.test("foreign storage use throws", () => {
  const first = f64Backend();
  const second = f64Backend();
  const x = floats(first, [1]);
  assert.throws(() => second.unary("neg", x), /another backend/);
});

Deno.test("dispose releases everything", async () => {
  const backend = f64Backend();
  const x = floats(backend, [1]);
  await backend.dispose();
  assert.equal(backend.liveStorages(), 0);
  await assert.rejects(backend.read(x), /disposed/);
  assert.throws(() => backend.alloc(1, "f32"), /disposed/);
});

Deno.test("size mismatch names op and sizes", () => {
  const backend = f64Backend();
  const spec: MatmulSpec = {
    batch: 1,
    m: 2,
    n: 2,
    k: 4,
    transA: false,
    transB: false,
    aBatched: true,
    bBatched: true,
  };
  assert.throws(
    () =>
      backend.matmul(
        floats(backend, [1, 2, 3, 4, 5, 6]),
        floats(backend, new Array(8).fill(1)),
        spec,
      ),
    /matmul: a has 6 elements but the sizes given imply 8/,
  );
});

Deno.test("wrong dtype input throws", () => {
  const backend = f64Backend();
  assert.throws(() => backend.unary("neg", ints(backend, [1])), /x has dtype i32 but must be f32/);
});

// --- elementwise ---------------------------------------------------------------------------------

const UNARY_CASES: { op: UnaryOp; param?: number; x: number; y: number }[] = [
  { op: "neg", x: 2, y: -2 },
  { op: "exp", x: 1, y: Math.E },
  { op: "log", x: Math.E, y: 1 },
  { op: "sqrt", x: 4, y: 2 },
  { op: "rsqrt", x: 4, y: 0.5 },
  { op: "tanh", x: 1, y: 0.7615941559557649 },
  { op: "relu", x: -1, y: 0 },
  { op: "relu", x: 2, y: 2 },
  { op: "gelu", x: 1, y: 0.8411919906082768 },
  { op: "gelu", x: -1, y: -0.15880800939172324 },
  { op: "silu", x: 1, y: 0.7310585786300049 },
  { op: "sigmoid", x: 0, y: 0.5 },
  { op: "square", x: -3, y: 9 },
  { op: "pow", param: 3, x: 2, y: 8 },
  { op: "scale", param: 1.5, x: 2, y: 3 },
  { op: "addScalar", param: -0.5, x: 2, y: 1.5 },
];

Deno.test("unary values", async () => {
  const backend = f64Backend();
  for (const { op, param, x, y } of UNARY_CASES) {
    const out = await values(backend, backend.unary(op, floats(backend, [x]), param));
    assertClose(out, [y], 1e-15, `${op}(${x})`);
  }
});

Deno.test("unary missing param throws", () => {
  const backend = f64Backend();
  assert.throws(() => backend.unary("pow", floats(backend, [2])), /unary pow: param is undefined/);
});

const BACKWARD_CASES: { op: UnaryOp; param?: number; x: number[] }[] = [
  { op: "neg", x: [-1.3, 0.4, 2.2] },
  { op: "exp", x: [-1.3, 0.4, 2.2] },
  { op: "log", x: [0.4, 1.1, 2.2] },
  { op: "sqrt", x: [0.4, 1.1, 2.2] },
  { op: "rsqrt", x: [0.4, 1.1, 2.2] },
  { op: "tanh", x: [-1.3, 0.4, 2.2] },
  { op: "relu", x: [-1.3, 0.4, 2.2] },
  { op: "gelu", x: [-1.3, 0.4, 2.2] },
  { op: "silu", x: [-1.3, 0.4, 2.2] },
  { op: "sigmoid", x: [-1.3, 0.4, 2.2] },
  { op: "square", x: [-1.3, 0.4, 2.2] },
  { op: "pow", param: 3, x: [-1.3, 0.4, 2.2] },
  { op: "pow", param: 0.5, x: [0.4, 1.1, 2.2] },
  { op: "scale", param: -2.5, x: [-1.3, 0.4, 2.2] },
  { op: "addScalar", param: 4, x: [-1.3, 0.4, 2.2] },
];

Deno.test("unaryBackward matches finite differences", async () => {
  const backend = f64Backend();
  const dy = [0.7, -1.1, 0.3];
  for (const { op, param, x } of BACKWARD_CASES) {
    const dx = backend.unaryBackward(op, floats(backend, x), floats(backend, dy), param);
    const expected = await numericGradient(
      (xs) => weightedSum(backend, backend.unary(op, floats(backend, xs), param), dy),
      x,
    );
    assertClose(await values(backend, dx), expected, GRAD_TOL, `d${op}`);
  }
});

Deno.test("binary broadcast [2,3] + [3]", async () => {
  const backend = f64Backend();
  const a = floats(backend, [1, 2, 3, 4, 5, 6]);
  const b = floats(backend, [10, 20, 30]);
  const y = backend.binary("add", a, [2, 3], b, [1, 3], [2, 3]);
  assert.deepEqual(await values(backend, y), [11, 22, 33, 14, 25, 36]);
});

Deno.test("binary broadcast both operands", async () => {
  const backend = f64Backend();
  const a = floats(backend, [1, 2]);
  const b = floats(backend, [10, 20, 30]);
  const y = backend.binary("mul", a, [2, 1], b, [1, 3], [2, 3]);
  assert.deepEqual(await values(backend, y), [10, 20, 30, 20, 40, 60]);
});

Deno.test("binary sub and div", async () => {
  const backend = f64Backend();
  const a = floats(backend, [6, 8]);
  const b = floats(backend, [2, 4]);
  assert.deepEqual(await values(backend, backend.binary("sub", a, [2], b, [2], [2])), [4, 4]);
  assert.deepEqual(await values(backend, backend.binary("div", a, [2], b, [2], [2])), [3, 2]);
});

Deno.test("binary rank mismatch throws", () => {
  const backend = f64Backend();
  const a = floats(backend, [1, 2, 3, 4, 5, 6]);
  const b = floats(backend, [1, 2, 3]);
  assert.throws(() => backend.binary("add", a, [2, 3], b, [3], [2, 3]), /leading 1s/);
});

Deno.test("binary incompatible shape throws", () => {
  const backend = f64Backend();
  const a = floats(backend, [1, 2, 3, 4, 5, 6]);
  const b = floats(backend, [1, 2]);
  assert.throws(
    () => backend.binary("add", a, [2, 3], b, [1, 2], [2, 3]),
    /bShape \[1, 2\] does not broadcast to \[2, 3\]/,
  );
});

Deno.test("sumToShape over rows and columns", async () => {
  const backend = f64Backend();
  const x = floats(backend, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(await values(backend, backend.sumToShape(x, [2, 3], [1, 3])), [5, 7, 9]);
  assert.deepEqual(await values(backend, backend.sumToShape(x, [2, 3], [2, 1])), [6, 15]);
  assert.deepEqual(await values(backend, backend.sumToShape(x, [2, 3], [1, 1])), [21]);
  assert.deepEqual(await values(backend, backend.sumToShape(x, [2, 3], [2, 3])), [
    1,
    2,
    3,
    4,
    5,
    6,
  ]);
});

// --- reductions ----------------------------------------------------------------------------------

Deno.test("reduce sum and max middle axis", async () => {
  const backend = f64Backend();
  const x = floats(backend, [1, 5, 3, 4, 2, 6]);
  assert.deepEqual(await values(backend, backend.reduce("sum", x, 1, 2, 3)), [5, 7, 9]);
  assert.deepEqual(await values(backend, backend.reduce("max", x, 1, 2, 3)), [4, 5, 6]);
  assert.deepEqual(await values(backend, backend.reduce("sum", x, 2, 3, 1)), [9, 12]);
  assert.deepEqual(await values(backend, backend.reduce("max", x, 2, 3, 1)), [5, 6]);
});

Deno.test("reduce max propagates NaN", async () => {
  const backend = f64Backend();
  const y = backend.reduce("max", floats(backend, [1, NaN, 3]), 1, 3, 1);
  assert.ok(Number.isNaN((await values(backend, y))[0]));
});

Deno.test("maxBackward tie goes to first", async () => {
  const backend = f64Backend();
  const x = floats(backend, [3, 7, 7, 1]);
  const dx = backend.maxBackward(x, floats(backend, [2]), 1, 4, 1);
  assert.deepEqual(await values(backend, dx), [0, 2, 0, 0]);
});

Deno.test("maxBackward strided slices", async () => {
  const backend = f64Backend();
  const x = floats(backend, [1, 5, 3, 4, 5, 6]);
  const dx = backend.maxBackward(x, floats(backend, [10, 20, 30]), 1, 2, 3);
  assert.deepEqual(await values(backend, dx), [0, 20, 0, 10, 0, 30]);
});

// --- matmul --------------------------------------------------------------------------------------

const A = [1, 2, 3, 4, 5, 6]; // 2×3
const A_T = [1, 4, 2, 5, 3, 6]; // A stored as 3×2
const B = [7, 8, 9, 10, 11, 12]; // 3×2
const B_T = [7, 9, 11, 8, 10, 12]; // B stored as 2×3
const AB = [58, 64, 139, 154];

function matmulSpec(overrides: Partial<MatmulSpec>): MatmulSpec {
  return {
    batch: 1,
    m: 2,
    n: 2,
    k: 3,
    transA: false,
    transB: false,
    aBatched: true,
    bBatched: true,
    ...overrides,
  };
}

Deno.test("matmul each transpose flag", async () => {
  const backend = f64Backend();
  const cases = [
    { a: A, b: B, transA: false, transB: false },
    { a: A_T, b: B, transA: true, transB: false },
    { a: A, b: B_T, transA: false, transB: true },
    { a: A_T, b: B_T, transA: true, transB: true },
  ];
  for (const { a, b, transA, transB } of cases) {
    const c = backend.matmul(
      floats(backend, a),
      floats(backend, b),
      matmulSpec({ transA, transB }),
    );
    assert.deepEqual(await values(backend, c), AB, `transA ${transA}, transB ${transB}`);
  }
});

Deno.test("matmul shared A batched B", async () => {
  const backend = f64Backend();
  const b = floats(backend, [...B, ...B.map((v) => 2 * v)]);
  const c = backend.matmul(floats(backend, A), b, matmulSpec({ batch: 2, aBatched: false }));
  assert.deepEqual(await values(backend, c), [...AB, ...AB.map((v) => 2 * v)]);
});

Deno.test("matmul batched A shared B", async () => {
  const backend = f64Backend();
  const a = floats(backend, [...A, ...A.map((v) => -v)]);
  const c = backend.matmul(a, floats(backend, B), matmulSpec({ batch: 2, bBatched: false }));
  assert.deepEqual(await values(backend, c), [...AB, ...AB.map((v) => -v)]);
});

// --- softmax -------------------------------------------------------------------------------------

Deno.test("softmax rows", async () => {
  const backend = f64Backend();
  const y = backend.softmax(floats(backend, [0, Math.log(3), 1000, 1000]), 2, 2, 0);
  assertClose(await values(backend, y), [0.25, 0.75, 0.5, 0.5]);
});

Deno.test("softmax causal square block", async () => {
  const backend = f64Backend();
  const y = backend.softmax(floats(backend, new Array(9).fill(0)), 3, 3, 3);
  const third = 1 / 3;
  assertClose(await values(backend, y), [1, 0, 0, 0.5, 0.5, 0, third, third, third]);
});

Deno.test("softmax causal fully masked row", async () => {
  const backend = f64Backend();
  // Two queries over one key: query 0 attends to keys c ≤ 0 + (1 − 2) = −1, so none.
  const y = backend.softmax(floats(backend, [5, 7]), 2, 1, 2);
  assert.deepEqual(await values(backend, y), [0, 1]);
});

Deno.test("softmax causal rows not whole blocks", () => {
  const backend = f64Backend();
  assert.throws(() => backend.softmax(floats(backend, [1, 2, 3]), 3, 1, 2), /multiple of/);
});

Deno.test("softmaxBackward matches finite differences", async () => {
  const backend = f64Backend();
  const x = [0.3, -1.2, 2.0, 0.5, 0.1, -0.4];
  const dy = [1.5, -0.3, 0.8, 0.2, -1.1, 0.6];
  for (const causalQueries of [0, 2]) {
    const y = backend.softmax(floats(backend, x), 2, 3, causalQueries);
    const dx = backend.softmaxBackward(y, floats(backend, dy), 2, 3);
    const expected = await numericGradient(
      (xs) => weightedSum(backend, backend.softmax(floats(backend, xs), 2, 3, causalQueries), dy),
      x,
    );
    assertClose(await values(backend, dx), expected, GRAD_TOL, `causalQueries ${causalQueries}`);
  }
});

// --- norms ---------------------------------------------------------------------------------------

Deno.test("layerNorm biased variance", async () => {
  const backend = f64Backend();
  const gamma = floats(backend, [2, 2, 2, 2]);
  const beta = floats(backend, [1, 1, 1, 1]);
  const { y, mean, rstd } = backend.layerNorm(floats(backend, [1, 2, 3, 4]), gamma, beta, 1, 4, 0);
  const inv = 1 / Math.sqrt(1.25);
  assertClose(await values(backend, y), [-1.5, -0.5, 0.5, 1.5].map((d) => 2 * d * inv + 1));
  assertClose(await values(backend, mean), [2.5]);
  assertClose(await values(backend, rstd), [inv]);
});

Deno.test("layerNormBackward matches finite differences", async () => {
  const backend = f64Backend();
  const x = [0.3, -1.2, 2.0, 0.5, 0.1, -0.4];
  const gamma = [1.1, -0.7, 0.4];
  const beta = [0.2, 0.0, -0.5];
  const dy = [1.5, -0.3, 0.8, 0.2, -1.1, 0.6];
  const eps = 1e-5;
  const loss = (xs: number[], gs: number[], bs: number[]) => {
    const { y } = backend.layerNorm(
      floats(backend, xs),
      floats(backend, gs),
      floats(backend, bs),
      2,
      3,
      eps,
    );
    return weightedSum(backend, y, dy);
  };

  const xs = floats(backend, x);
  const gs = floats(backend, gamma);
  const { mean, rstd } = backend.layerNorm(xs, gs, floats(backend, beta), 2, 3, eps);
  const { dx, dgamma, dbeta } = backend.layerNormBackward(
    xs,
    gs,
    mean,
    rstd,
    floats(backend, dy),
    2,
    3,
  );

  const dxExpected = await numericGradient((v) => loss(v, gamma, beta), x);
  const dgammaExpected = await numericGradient((v) => loss(x, v, beta), gamma);
  const dbetaExpected = await numericGradient((v) => loss(x, gamma, v), beta);
  assertClose(await values(backend, dx), dxExpected, GRAD_TOL, "dx");
  assertClose(await values(backend, dgamma), dgammaExpected, GRAD_TOL, "dgamma");
  assertClose(await values(backend, dbeta), dbetaExpected, GRAD_TOL, "dbeta");
});

Deno.test("rmsNorm values", async () => {
  const backend = f64Backend();
  const { y, rstd } = backend.rmsNorm(floats(backend, [3, 4]), floats(backend, [1, 2]), 1, 2, 0);
  const inv = 1 / Math.sqrt(12.5);
  assertClose(await values(backend, y), [3 * inv, 8 * inv]);
  assertClose(await values(backend, rstd), [inv]);
});

Deno.test("rmsNormBackward matches finite differences", async () => {
  const backend = f64Backend();
  const x = [0.3, -1.2, 2.0, 0.5, 0.1, -0.4];
  const gamma = [1.1, -0.7, 0.4];
  const dy = [1.5, -0.3, 0.8, 0.2, -1.1, 0.6];
  const eps = 1e-5;
  const loss = (xs: number[], gs: number[]) => {
    const { y } = backend.rmsNorm(floats(backend, xs), floats(backend, gs), 2, 3, eps);
    return weightedSum(backend, y, dy);
  };

  const xs = floats(backend, x);
  const gs = floats(backend, gamma);
  const { rstd } = backend.rmsNorm(xs, gs, 2, 3, eps);
  const { dx, dgamma } = backend.rmsNormBackward(xs, gs, rstd, floats(backend, dy), 2, 3);

  const dxExpected = await numericGradient((v) => loss(v, gamma), x);
  const dgammaExpected = await numericGradient((v) => loss(x, v), gamma);
  assertClose(await values(backend, dx), dxExpected, GRAD_TOL, "dx");
  assertClose(await values(backend, dgamma), dgammaExpected, GRAD_TOL, "dgamma");
});

// --- indexing ------------------------------------------------------------------------------------

Deno.test("gather rows by id", async () => {
  const backend = f64Backend();
  const table = floats(backend, [1, 2, 3, 4, 5, 6]);
  const y = backend.gather(table, ints(backend, [2, 0, 2]), 3, 3, 2);
  assert.deepEqual(await values(backend, y), [5, 6, 1, 2, 5, 6]);
});

Deno.test("gather out-of-range id throws", () => {
  const backend = f64Backend();
  const table = floats(backend, [1, 2, 3, 4, 5, 6]);
  assert.throws(
    () => backend.gather(table, ints(backend, [0, 3]), 2, 3, 2),
    /gather: id 3 at position 1 is out of range for vocab 3/,
  );
});

Deno.test("scatterAdd sums repeated ids", async () => {
  const backend = f64Backend();
  const dy = floats(backend, [1, 1, 2, 2, 3, 3]);
  const y = backend.scatterAdd(dy, ints(backend, [2, 0, 2]), 3, 3, 2);
  assert.deepEqual(await values(backend, y), [2, 2, 0, 0, 4, 4]);
});

Deno.test("scatterAdd negative id throws", () => {
  const backend = f64Backend();
  const dy = floats(backend, [1, 1]);
  assert.throws(
    () => backend.scatterAdd(dy, ints(backend, [-1]), 1, 3, 2),
    /scatterAdd: id -1 at position 0 is out of range for vocab 3/,
  );
});

// --- layout --------------------------------------------------------------------------------------

Deno.test("transpose 2-D", async () => {
  const backend = f64Backend();
  const y = backend.transpose(floats(backend, [1, 2, 3, 4, 5, 6]), [2, 3], 0, 1);
  assert.deepEqual(await values(backend, y), [1, 4, 2, 5, 3, 6]);
});

Deno.test("transpose 3-D outer axes", async () => {
  const backend = f64Backend();
  const x = Array.from({ length: 12 }, (_, i) => i);
  const expected: number[] = [];
  // Output [3, 2, 2] contains x[a][b][c] at [c][b][a].
  for (let c = 0; c < 3; c++) {
    for (let b = 0; b < 2; b++) {
      for (let a = 0; a < 2; a++) expected.push(x[a * 6 + b * 3 + c]);
    }
  }
  const y = backend.transpose(floats(backend, x), [2, 2, 3], 2, 0);
  assert.deepEqual(await values(backend, y), expected);
});

Deno.test("transpose keeps i32 dtype", async () => {
  const backend = f64Backend();
  const y = backend.transpose(ints(backend, [1, 2, 3, 4]), [2, 2], 0, 1);
  assert.equal(y.dtype, "i32");
  assert.deepEqual(await values(backend, y), [1, 3, 2, 4]);
});

Deno.test("copyAxis block into dst", async () => {
  const backend = f64Backend();
  const src = floats(backend, [1, 2, 3, 4, 5, 6]);
  const dst = backend.alloc(8, "f32");
  backend.fill(dst, 0);
  backend.copyAxis(src, dst, {
    outer: 2,
    inner: 1,
    srcAxisLen: 3,
    dstAxisLen: 4,
    srcStart: 1,
    dstStart: 2,
    len: 2,
  });
  assert.deepEqual(await values(backend, dst), [0, 0, 2, 3, 0, 0, 5, 6]);
});

Deno.test("copyAxis out of bounds throws", () => {
  const backend = f64Backend();
  const src = floats(backend, [1, 2, 3]);
  const dst = floats(backend, [0, 0, 0]);
  const spec = {
    outer: 1,
    inner: 1,
    srcAxisLen: 3,
    dstAxisLen: 3,
    srcStart: 0,
    dstStart: 2,
    len: 2,
  };
  assert.throws(() => backend.copyAxis(src, dst, spec), /exceeds dstAxisLen 3/);
});

Deno.test("fill float and int", async () => {
  const backend = f64Backend();
  const f = backend.alloc(2, "f32");
  const i = backend.alloc(2, "i32");
  backend.fill(f, 0.5);
  backend.fill(i, -7);
  assert.deepEqual(await values(backend, f), [0.5, 0.5]);
  assert.deepEqual(await values(backend, i), [-7, -7]);
});

// --- rope ----------------------------------------------------------------------------------------

Deno.test("rope rotate-half pairs", async () => {
  const backend = f64Backend();
  // Pair (0, 2) turns by 90° and pair (1, 3) by 0°.
  const x = floats(backend, [1, 2, 3, 4]);
  const cos = floats(backend, [0, 1]);
  const sin = floats(backend, [1, 0]);
  assert.deepEqual(await values(backend, backend.rope(x, cos, sin, 1, 1, 4, false)), [-3, 2, 1, 4]);
  assert.deepEqual(await values(backend, backend.rope(x, cos, sin, 1, 1, 4, true)), [3, 2, -1, 4]);
});

Deno.test("rope inverse undoes forward", async () => {
  const backend = f64Backend();
  const x = [0.3, -1.2, 2.0, 0.5, 0.1, -0.4, 1.7, -0.9, 0.25, 0.8, -2.1, 1.3, 0.6, -0.2, 0.9, 1.1];
  const angles = [0.1, 0.7, 1.9, -0.4];
  const cos = floats(backend, angles.map(Math.cos));
  const sin = floats(backend, angles.map(Math.sin));
  const y = backend.rope(floats(backend, x), cos, sin, 2, 2, 4, false);
  const back = backend.rope(y, cos, sin, 2, 2, 4, true);
  assertClose(await values(backend, back), x, 1e-15);
});

// --- cross-entropy -------------------------------------------------------------------------------

Deno.test("crossEntropy large logits stay finite", async () => {
  const backend = createCpuBackend();
  const logits = floats(backend, [1000, 0]);
  const first = backend.crossEntropy(logits, ints(backend, [0]), 1, 2, -100);
  const second = backend.crossEntropy(logits, ints(backend, [1]), 1, 2, -100);
  const loss = (await values(backend, first.loss))[0];
  assert.ok(Number.isFinite(loss), `loss is ${loss}`);
  assertClose([loss], [Math.log1p(Math.exp(-1000))], 1e-7);
  assertClose(await values(backend, second.loss), [1000], 1e-7);
});

Deno.test("crossEntropy ignores rows", async () => {
  const backend = f64Backend();
  const logits = floats(backend, [0, 0, 5, 1]);
  const { loss, lse, count } = backend.crossEntropy(logits, ints(backend, [1, -100]), 2, 2, -100);
  assertClose(await values(backend, loss), [Math.log(2)]);
  assertClose(await values(backend, lse), [Math.log(2), 5 + Math.log1p(Math.exp(-4))]);
  assert.deepEqual(await values(backend, count), [1]);
});

Deno.test("crossEntropy all ignored", async () => {
  const backend = f64Backend();
  const logits = floats(backend, [0.5, 2, -1, 3]);
  const targets = ints(backend, [-100, -100]);
  const { loss, lse, count } = backend.crossEntropy(logits, targets, 2, 2, -100);
  const dx = backend.crossEntropyBackward(
    logits,
    targets,
    lse,
    count,
    floats(backend, [1]),
    2,
    2,
    -100,
  );
  assert.deepEqual(await values(backend, loss), [0]);
  assert.deepEqual(await values(backend, count), [0]);
  assert.deepEqual(await values(backend, dx), [0, 0, 0, 0]);
});

Deno.test("crossEntropy target out of range throws", () => {
  const backend = f64Backend();
  assert.throws(
    () => backend.crossEntropy(floats(backend, [0, 0]), ints(backend, [2]), 1, 2, -100),
    /target 2 of row 0 is out of range for 2 classes/,
  );
});

Deno.test("crossEntropyBackward matches finite differences", async () => {
  const backend = f64Backend();
  const x = [0.3, -1.2, 2.0, 0.5, 0.1, -0.4, 1.7, -0.9, 0.25];
  const targets = ints(backend, [2, -100, 0]);
  const dy = 1.7;
  const loss = async (xs: number[]) => {
    const out = backend.crossEntropy(floats(backend, xs), targets, 3, 3, -100);
    return dy * (await values(backend, out.loss))[0];
  };

  const logits = floats(backend, x);
  const { lse, count } = backend.crossEntropy(logits, targets, 3, 3, -100);
  const dx = backend.crossEntropyBackward(
    logits,
    targets,
    lse,
    count,
    floats(backend, [dy]),
    3,
    3,
    -100,
  );
  assertClose(await values(backend, dx), await numericGradient(loss, x), GRAD_TOL);
});

// --- optimizer -----------------------------------------------------------------------------------

Deno.test("sumSquares and clipCoefficient", async () => {
  const backend = f64Backend();
  assert.deepEqual(await values(backend, backend.sumSquares(floats(backend, [1, 2, 3]))), [14]);
  const clipped = backend.clipCoefficient(floats(backend, [16]), 1);
  assertClose(await values(backend, clipped), [1 / (4 + 1e-6)], 1e-15);
  const unclipped = backend.clipCoefficient(floats(backend, [0.25]), 1);
  assert.deepEqual(await values(backend, unclipped), [1]);
});

const ADAM = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 0, weightDecay: 0, step: 1 };

Deno.test("adamw first step moves by lr", async () => {
  const backend = f64Backend();
  const param = floats(backend, [1]);
  const m = floats(backend, [0]);
  const v = floats(backend, [0]);
  backend.adamw(param, floats(backend, [1]), m, v, null, ADAM);
  assert.deepEqual(await values(backend, param), [1 - 0.1]);
  assertClose(await values(backend, m), [0.1]);
  assertClose(await values(backend, v), [0.001]);
});

Deno.test("adamw constant gradient two steps", async () => {
  const backend = f64Backend();
  const param = floats(backend, [1]);
  const m = floats(backend, [0]);
  const v = floats(backend, [0]);
  const grad = floats(backend, [-3]);
  backend.adamw(param, grad, m, v, null, ADAM);
  backend.adamw(param, grad, m, v, null, { ...ADAM, step: 2 });
  // Bias correction makes m̂ = g and v̂ = g² for a constant g, so each step moves by lr.
  assertClose(await values(backend, param), [1.2], 1e-14);
});

Deno.test("adamw decoupled weight decay", async () => {
  const backend = f64Backend();
  const param = floats(backend, [2]);
  const spec = { ...ADAM, eps: 1e-8, weightDecay: 0.5 };
  backend.adamw(
    param,
    floats(backend, [0]),
    floats(backend, [0]),
    floats(backend, [0]),
    null,
    spec,
  );
  assert.deepEqual(await values(backend, param), [2 - 0.1 * 0.5 * 2]);
});

Deno.test("adamw gradScale scales gradient", async () => {
  const backend = f64Backend();
  const m = floats(backend, [0]);
  const v = floats(backend, [0]);
  const scale = floats(backend, [0.25]);
  backend.adamw(floats(backend, [1]), floats(backend, [4]), m, v, scale, ADAM);
  assertClose(await values(backend, m), [0.1]);
  assertClose(await values(backend, v), [0.001]);
});

Deno.test("adamw size mismatch throws", () => {
  const backend = f64Backend();
  const param = floats(backend, [1, 2]);
  assert.throws(
    () =>
      backend.adamw(
        param,
        floats(backend, [1]),
        floats(backend, [0, 0]),
        floats(backend, [0, 0]),
        null,
        ADAM,
      ),
    /adamw: grad has 1 elements but the sizes given imply 2/,
  );
});
