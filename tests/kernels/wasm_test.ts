/**
 * Tests of the fast CPU backend: each op it overrides, against the float64 reference backend, on
 * fresh random inputs of awkward shapes (1, primes, sizes that are no multiple of the 4-lane
 * vector or of the 6×8 matmul tile).
 *
 * Run: npx deno test -A tests/kernels/wasm_test.ts
 */

import assert from "node:assert/strict";
import type { Backend, MatmulSpec, Storage } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createFastCpuBackend } from "../../kernels/cpu/fast_backend.ts";
import { WasmGemm } from "../../kernels/cpu/wasm/gemm.ts";
import { WasmHeap } from "../../kernels/cpu/wasm/heap.ts";
import { supportsRelaxedSimd } from "../../kernels/cpu/wasm/gemm_kernel.ts";

/** Relative tolerances from the kernel rules: elementwise ops 1e-5, reductions and matmuls 1e-4. */
const TOL_ELEMENTWISE = 1e-5;
const TOL_REDUCTION = 1e-4;

/** A small deterministic generator (mulberry32), so a failure reproduces. */
function randomArray(size: number, seed: number, scale = 1): Float64Array {
  let state = seed >>> 0;
  const out = new Float64Array(size);
  for (let i = 0; i < size; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const unit = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = (2 * unit - 1) * scale;
  }
  return out;
}

/** Rounds to float32 first, so both backends see the same inputs. */
function asF32(values: Float64Array): Float32Array {
  return Float32Array.from(values);
}

async function read(backend: Backend, storage: Storage): Promise<Float64Array> {
  return Float64Array.from(await backend.read(storage));
}

/**
 * Fails at the first element with |actual − expected| > tol · scale or a NaN, where scale is the
 * largest |expected| of the array (at least 1): a sum of k products of unit-sized terms has an
 * absolute float32 error that grows with the terms, not with the sum, which can cancel to 0.
 */
function assertClose(actual: Float64Array, expected: Float64Array, tol: number, label: string) {
  assert.equal(actual.length, expected.length, `${label}: length`);
  let scale = 1;
  for (const value of expected) scale = Math.max(scale, Math.abs(value));
  for (let i = 0; i < actual.length; i++) {
    const error = Math.abs(actual[i] - expected[i]);
    if (!(error <= tol * scale)) {
      assert.fail(
        `${label}[${i}] is ${actual[i]} but the float64 reference gives ${expected[i]} ` +
          `(tolerance ${tol} × ${scale})`,
      );
    }
  }
}

/** Runs one matmul on the fast backend and the float64 reference and compares the results. */
async function checkMatmul(spec: MatmulSpec, seed: number): Promise<void> {
  const fast = createFastCpuBackend({ poison: true });
  const reference = createCpuBackend({ precision: "f64" });
  const aSize = (spec.aBatched ? spec.batch : 1) * spec.m * spec.k;
  const bSize = (spec.bBatched ? spec.batch : 1) * spec.k * spec.n;
  const a = asF32(randomArray(aSize, seed));
  const b = asF32(randomArray(bSize, seed + 1));

  const actual = await read(
    fast,
    fast.matmul(fast.upload(a, "f32"), fast.upload(b, "f32"), spec),
  );
  const expected = await read(
    reference,
    reference.matmul(reference.upload(a, "f32"), reference.upload(b, "f32"), spec),
  );
  assertClose(actual, expected, TOL_REDUCTION, `matmul ${JSON.stringify(spec)}`);
  await fast.dispose();
  await reference.dispose();
}

Deno.test("relaxed simd detected", () => {
  // Deno ships V8 with relaxed SIMD; without it the kernel falls back to mul + add.
  assert.equal(typeof supportsRelaxedSimd(), "boolean");
});

Deno.test("matmul odd shapes all transposes", async () => {
  const sizes = [1, 7, 13, 67];
  let seed = 1;
  for (const m of sizes) {
    for (const n of sizes) {
      for (const k of [1, 7, 67]) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            const spec = { batch: 1, m, n, k, transA, transB, aBatched: true, bBatched: true };
            await checkMatmul(spec, seed++);
          }
        }
      }
    }
  }
});

Deno.test("matmul batched and broadcast operands", async () => {
  let seed = 1000;
  for (const [aBatched, bBatched] of [[true, true], [true, false], [false, true]]) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const spec = { batch: 3, m: 13, n: 11, k: 9, transA, transB, aBatched, bBatched };
        await checkMatmul(spec, seed++);
      }
    }
  }
});

Deno.test("matmul larger than one cache panel", async () => {
  // k past 512 and n past 128 exercise many tiles and long panels of B.
  await checkMatmul(
    {
      batch: 1,
      m: 131,
      n: 137,
      k: 523,
      transA: false,
      transB: true,
      aBatched: true,
      bBatched: true,
    },
    77,
  );
  await checkMatmul(
    {
      batch: 2,
      m: 67,
      n: 256,
      k: 130,
      transA: true,
      transB: false,
      aBatched: true,
      bBatched: false,
    },
    78,
  );
});

Deno.test("matmul empty and zero k", async () => {
  const fast = createFastCpuBackend({ poison: true });
  const a = fast.upload(new Float32Array(0), "f32");
  const b = fast.upload(new Float32Array(0), "f32");
  const spec = {
    batch: 2,
    m: 3,
    n: 5,
    k: 0,
    transA: false,
    transB: false,
    aBatched: true,
    bBatched: true,
  };
  const c = await read(fast, fast.matmul(a, b, spec));
  assert.deepEqual(Array.from(c), new Array(30).fill(0));

  const empty = fast.matmul(a, b, { ...spec, m: 0 });
  assert.equal(empty.size, 0);
  await fast.dispose();
});

Deno.test("matmul rejects wrong sizes", () => {
  const fast = createFastCpuBackend();
  const a = fast.upload(new Float32Array(6), "f32");
  const b = fast.upload(new Float32Array(6), "f32");
  const spec = {
    batch: 1,
    m: 2,
    n: 4,
    k: 3,
    transA: false,
    transB: false,
    aBatched: true,
    bBatched: true,
  };
  assert.throws(() => fast.matmul(a, b, spec), /b has 6 elements but the sizes given imply 12/);
});

Deno.test("fast backend reports float32", () => {
  const fast = createFastCpuBackend();
  assert.equal(fast.precision, "f32");
  assert.equal(fast.name, "cpu");
  assert.match(fast.description, /WebAssembly SIMD/);
});

/** Runs `op` on both backends with the same float32 inputs and compares the results. */
async function checkOp(
  label: string,
  inputs: Float64Array[],
  op: (backend: Backend, storages: Storage[]) => Storage,
  tol: number,
): Promise<void> {
  const fast = createFastCpuBackend({ poison: true });
  const reference = createCpuBackend({ precision: "f64" });
  const rounded = inputs.map(asF32);
  const actual = await read(fast, op(fast, rounded.map((x) => fast.upload(x, "f32"))));
  const expected = await read(
    reference,
    op(reference, rounded.map((x) => reference.upload(x, "f32"))),
  );
  assertClose(actual, expected, tol, label);
  await fast.dispose();
  await reference.dispose();
}

Deno.test("gelu forward and backward odd sizes", async () => {
  for (const size of [1, 7, 13, 67, 1031]) {
    // Scale 8 reaches the tails, where tanh saturates and GELU of a negative x is tiny.
    const x = randomArray(size, size, 8);
    const dy = randomArray(size, size + 1);
    await checkOp(`gelu ${size}`, [x], (b, [xs]) => b.unary("gelu", xs), TOL_ELEMENTWISE);
    await checkOp(
      `gelu backward ${size}`,
      [x, dy],
      (b, [xs, dys]) => b.unaryBackward("gelu", xs, dys),
      TOL_ELEMENTWISE,
    );
  }
});

Deno.test("scale odd sizes", async () => {
  for (const size of [1, 13, 67]) {
    const x = randomArray(size, size);
    await checkOp(`scale ${size}`, [x], (b, [xs]) => b.unary("scale", xs, -0.37), TOL_ELEMENTWISE);
  }
});

Deno.test("binary broadcast along leading axes", async () => {
  const cases: [number[], number[]][] = [
    [[7, 13], [7, 13]],
    [[7, 13], [1, 13]],
    [[3, 5, 67], [1, 1, 67]],
    [[3, 5, 7], [1, 5, 7]],
    [[1, 13], [7, 13]], // the broadcast operand first: swapped for add and mul
    [[7, 1], [7, 13]], // broadcast along a trailing axis: the reference path
  ];
  let seed = 2000;
  for (const [aShape, bShape] of cases) {
    const outShape = aShape.map((d, axis) => Math.max(d, bShape[axis]));
    const a = randomArray(aShape.reduce((p, d) => p * d, 1), seed++);
    // Divisors away from 0, so "div" stays within the elementwise tolerance.
    const b = randomArray(bShape.reduce((p, d) => p * d, 1), seed++).map((v) =>
      v + 2 * Math.sign(v || 1)
    );
    for (const op of ["add", "sub", "mul", "div"] as const) {
      await checkOp(
        `${op} ${JSON.stringify(aShape)} ${JSON.stringify(bShape)}`,
        [a, b],
        (backend, [as, bs]) => backend.binary(op, as, aShape, bs, bShape, outShape),
        TOL_ELEMENTWISE,
      );
    }
  }
});

Deno.test("transpose every axis pair", async () => {
  const shape = [3, 7, 1, 5, 2];
  const x = randomArray(shape.reduce((p, d) => p * d, 1), 3000);
  for (let axis1 = 0; axis1 < shape.length; axis1++) {
    for (let axis2 = 0; axis2 < shape.length; axis2++) {
      await checkOp(
        `transpose ${axis1} ${axis2}`,
        [x],
        (backend, [xs]) => backend.transpose(xs, shape, axis1, axis2),
        0,
      );
    }
  }
});

Deno.test("transpose inner blocks of whole vectors", async () => {
  // Swaps whose inner block (the axes after both) is a multiple of 4 floats take the WebAssembly
  // vector copy, such as the split [B, T, H, headDim] → [B, H, T, headDim] of attention heads.
  for (const shape of [[3, 5, 2, 4, 8], [2, 6, 3, 8], [4, 1, 12]]) {
    const x = randomArray(shape.reduce((p, d) => p * d, 1), 3100 + shape.length);
    for (let axis1 = 0; axis1 < shape.length; axis1++) {
      for (let axis2 = axis1 + 1; axis2 < shape.length; axis2++) {
        await checkOp(
          `transpose ${shape} ${axis1} ${axis2}`,
          [x],
          (backend, [xs]) => backend.transpose(xs, shape, axis1, axis2),
          0,
        );
      }
    }
  }
});

Deno.test("transpose int32", async () => {
  const fast = createFastCpuBackend({ poison: true });
  const x = fast.upload(Int32Array.from({ length: 6 }, (_, i) => i), "i32");
  const y = fast.transpose(x, [2, 3], 0, 1);
  assert.equal(y.dtype, "i32");
  assert.deepEqual(Array.from(await fast.read(y)), [0, 3, 1, 4, 2, 5]);
  await fast.dispose();
});

Deno.test("gelu forward and backward tails", async () => {
  // Past x ≈ −9.5 exp(−2u) overflows float32; the kernel must give 0, not NaN, like the reference.
  const x = Float64Array.from([
    -1e4,
    -100,
    -20,
    -10,
    -9.6,
    -9.4,
    -5,
    -1e-3,
    0,
    1e-3,
    5,
    10,
    20,
    100,
  ]);
  const dy = Float64Array.from(x, (_, i) => 1 - 0.1 * i);
  await checkOp("gelu tails", [x], (b, [xs]) => b.unary("gelu", xs), TOL_ELEMENTWISE);
  await checkOp(
    "gelu backward tails",
    [x, dy],
    (b, [xs, dys]) => b.unaryBackward("gelu", xs, dys),
    TOL_ELEMENTWISE,
  );
});

Deno.test("scale backward odd sizes", async () => {
  for (const size of [1, 13, 67]) {
    const x = randomArray(size, size);
    const dy = randomArray(size, size + 1);
    await checkOp(
      `scale backward ${size}`,
      [x, dy],
      (b, [xs, dys]) => b.unaryBackward("scale", xs, dys, -0.37),
      TOL_ELEMENTWISE,
    );
  }
});

Deno.test("softmax odd shapes causal and not", async () => {
  // [rows, cols, causalQueries]; cols < T leaves the first rows of each block fully masked.
  const cases: [number, number, number][] = [
    [1, 1, 0],
    [7, 13, 0],
    [13, 67, 0],
    [67, 7, 0],
    [14, 7, 7],
    [26, 13, 13],
    [13, 67, 13],
    [14, 3, 7],
    [67, 67, 67],
    // Rows of whole vectors run in place in the heap, causal ones row by row.
    [12, 8, 0],
    [24, 12, 12],
    [16, 20, 8],
    [20, 4, 10],
    [32, 12, 16],
  ];
  let seed = 4000;
  for (const [rows, cols, causalQueries] of cases) {
    // Scale 30 spreads logits over many units, so exp covers a wide range.
    const x = randomArray(rows * cols, seed++, 30);
    await checkOp(
      `softmax ${rows}×${cols} causal ${causalQueries}`,
      [x],
      (b, [xs]) => b.softmax(xs, rows, cols, causalQueries),
      TOL_ELEMENTWISE,
    );
  }
});

Deno.test("softmax rejects rows not a multiple of causalQueries", () => {
  const fast = createFastCpuBackend();
  const x = fast.upload(new Float32Array(10), "f32");
  assert.throws(() => fast.softmax(x, 5, 2, 3), /rows is 5, not a multiple of causalQueries 3/);
});

/** Runs crossEntropy and its backward on both backends and compares loss, lse, count and grads. */
async function checkCrossEntropy(
  rows: number,
  cols: number,
  targets: Int32Array,
  ignoreIndex: number,
  seed: number,
): Promise<void> {
  const logits = asF32(randomArray(rows * cols, seed, 20));
  const label = `crossEntropy ${rows}×${cols}`;
  const run = async (backend: Backend) => {
    const x = backend.upload(logits, "f32");
    const t = backend.upload(targets, "i32");
    const { loss, lse, count } = backend.crossEntropy(x, t, rows, cols, ignoreIndex);
    const dy = backend.upload(Float32Array.of(0.75), "f32");
    const dx = backend.crossEntropyBackward(x, t, lse, count, dy, rows, cols, ignoreIndex);
    return {
      loss: await read(backend, loss),
      lse: await read(backend, lse),
      count: await read(backend, count),
      dx: await read(backend, dx),
    };
  };
  const fast = createFastCpuBackend({ poison: true });
  const reference = createCpuBackend({ precision: "f64" });
  const actual = await run(fast);
  const expected = await run(reference);
  assertClose(actual.loss, expected.loss, TOL_REDUCTION, `${label} loss`);
  assertClose(actual.lse, expected.lse, TOL_REDUCTION, `${label} lse`);
  assert.deepEqual(Array.from(actual.count), Array.from(expected.count), `${label} count`);
  assertClose(actual.dx, expected.dx, TOL_ELEMENTWISE, `${label} dlogits`);
  await fast.dispose();
  await reference.dispose();
}

Deno.test("crossEntropy odd shapes with ignored rows", async () => {
  let seed = 5000;
  for (const rows of [1, 7, 13, 67]) {
    for (const cols of [1, 7, 67]) {
      // Every third row is ignored; the others cycle through the classes.
      const targets = Int32Array.from({ length: rows }, (_, r) => r % 3 === 2 ? -100 : r % cols);
      await checkCrossEntropy(rows, cols, targets, -100, seed++);
    }
  }
});

Deno.test("crossEntropy all rows ignored", async () => {
  await checkCrossEntropy(7, 13, new Int32Array(7).fill(-1), -1, 5100);
});

Deno.test("crossEntropy rejects out of range target", () => {
  const fast = createFastCpuBackend();
  const x = fast.upload(new Float32Array(6), "f32");
  const t = fast.upload(Int32Array.of(0, 3), "i32");
  assert.throws(
    () => fast.crossEntropy(x, t, 2, 3, -100),
    /target 3 of row 1 is out of range for 3 classes/,
  );
});

Deno.test("matmul on two threads matches one", async () => {
  // Both threads run the same kernel in the same summation order, so results are bitwise equal.
  const oneThread = WasmGemm.create(WasmHeap.create(), { threads: 1 });
  const twoThreads = WasmGemm.create(WasmHeap.create(), { threads: 2 });
  assert.equal(await twoThreads.waitForWorker(), true, "worker started");
  const specs: MatmulSpec[] = [
    {
      batch: 1,
      m: 131,
      n: 137,
      k: 523,
      transA: false,
      transB: true,
      aBatched: true,
      bBatched: true,
    },
    {
      batch: 3,
      m: 67,
      n: 67,
      k: 130,
      transA: true,
      transB: false,
      aBatched: true,
      bBatched: false,
    },
    {
      batch: 7,
      m: 13,
      n: 67,
      k: 256,
      transA: false,
      transB: false,
      aBatched: false,
      bBatched: true,
    },
  ];
  let seed = 6000;
  for (const spec of specs) {
    const a = asF32(randomArray((spec.aBatched ? spec.batch : 1) * spec.m * spec.k, seed++));
    const b = asF32(randomArray((spec.bBatched ? spec.batch : 1) * spec.k * spec.n, seed++));
    const expected = new Float32Array(spec.batch * spec.m * spec.n);
    const actual = new Float32Array(spec.batch * spec.m * spec.n);
    oneThread.matmul(a, b, expected, spec);
    twoThreads.matmul(a, b, actual, spec);
    assert.deepEqual(actual, expected, `two threads ${JSON.stringify(spec)}`);
  }
  oneThread.dispose();
  twoThreads.dispose();
});

Deno.test("softmax with -Infinity and far logits", async () => {
  // −Infinity must give exactly 0, and logits 100 apart must not underflow the row's sum.
  const x = Float64Array.from([0, -Infinity, 3, -Infinity, -100, 50, -50, 0, -1e30, 7, 1e-3, -200]);
  await checkOp("softmax infinities", [x], (b, [xs]) => b.softmax(xs, 3, 4, 0), TOL_ELEMENTWISE);
  await checkOp(
    "softmax infinities causal",
    [x],
    (b, [xs]) => b.softmax(xs, 3, 4, 3),
    TOL_ELEMENTWISE,
  );
});

Deno.test("softmax backward odd shapes", async () => {
  let seed = 7000;
  for (const [rows, cols] of [[1, 1], [7, 13], [13, 67], [67, 7]]) {
    const y = randomArray(rows * cols, seed++).map(Math.abs);
    const dy = randomArray(rows * cols, seed++);
    await checkOp(
      `softmax backward ${rows}×${cols}`,
      [y, dy],
      (b, [ys, dys]) => b.softmaxBackward(ys, dys, rows, cols),
      TOL_ELEMENTWISE,
    );
  }
});

Deno.test("adamw odd sizes and steps", async () => {
  let seed = 8000;
  for (const size of [1, 7, 67, 1031]) {
    for (const [step, scaled] of [[1, false], [5, true]] as const) {
      const param = randomArray(size, seed++);
      const grad = randomArray(size, seed++);
      const m = randomArray(size, seed++, 0.1);
      // v is a running mean of squares, so it is never negative.
      const v = randomArray(size, seed++, 0.01).map(Math.abs);
      const gradScale = Float64Array.of(0.37);
      const spec = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step };

      // Each run updates param, m and v in place and returns the one to compare.
      for (const [name, which] of [["param", 0], ["m", 2], ["v", 3]] as const) {
        await checkOp(
          `adamw ${name} size ${size} step ${step}${scaled ? " scaled" : ""}`,
          [param, grad, m, v, gradScale],
          (b, [p, g, ms, vs, s]) => {
            b.adamw(p, g, ms, vs, scaled ? s : null, spec);
            return [p, g, ms, vs][which];
          },
          TOL_ELEMENTWISE,
        );
      }
    }
  }
});

Deno.test("rmsNorm forward and backward odd shapes", async () => {
  let seed = 9000;
  for (const [rows, cols] of [[1, 1], [7, 13], [67, 128], [3, 1031]]) {
    const x = randomArray(rows * cols, seed++, 3);
    const gamma = randomArray(cols, seed++);
    const dy = randomArray(rows * cols, seed++);
    const label = `rmsNorm ${rows}×${cols}`;
    await checkOp(
      `${label} y`,
      [x, gamma],
      (b, [xs, g]) => b.rmsNorm(xs, g, rows, cols, 1e-5).y,
      TOL_ELEMENTWISE,
    );
    await checkOp(
      `${label} rstd`,
      [x, gamma],
      (b, [xs, g]) => b.rmsNorm(xs, g, rows, cols, 1e-5).rstd,
      TOL_ELEMENTWISE,
    );
    // The backward takes rstd from the same backend's forward, as training does.
    const backward = (b: Backend, [xs, g, dys]: Storage[]) => {
      const { rstd } = b.rmsNorm(xs, g, rows, cols, 1e-5);
      return b.rmsNormBackward(xs, g, rstd, dys, rows, cols);
    };
    await checkOp(`${label} dx`, [x, gamma, dy], (b, s) => backward(b, s).dx, TOL_REDUCTION);
    await checkOp(
      `${label} dgamma`,
      [x, gamma, dy],
      (b, s) => backward(b, s).dgamma,
      TOL_REDUCTION,
    );
  }
});
