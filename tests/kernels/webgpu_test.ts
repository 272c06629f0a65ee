/**
 * WebGPU backend against the float64 CPU reference.
 *
 * Each case draws fresh seeded inputs at awkward shapes (1, primes, non-multiples of the 64×64
 * matmul tile), runs the op on both backends (the GPU one poisons new outputs with NaN) and
 * compares every output: |gpu − cpu| ≤ tol · max(1, |cpu|), where NaN never passes.
 *
 * Run: `npx deno test -A tests/kernels/webgpu_test.ts`. Without a WebGPU adapter every test is
 * skipped with the reason.
 */

import assert from "node:assert/strict";
import type {
  AdamWSpec,
  Backend,
  HostArray,
  MatmulSpec,
  Storage,
  UnaryOp,
} from "../../kernels/backend.ts";
import { BackendUnavailableError } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../../kernels/webgpu/backend.ts";
import { Rng } from "../../tensor/rng.ts";

/** Tolerances relative to max(1, |reference|). */
const ELEMENTWISE_TOL = 1e-5;
const REDUCTION_TOL = 1e-4;

let gpu: WebGpuBackend | null = null;
let skipReason = "";
try {
  gpu = await createWebGpuBackend({ poison: true });
} catch (error) {
  if (!(error instanceof BackendUnavailableError)) throw error;
  skipReason = error.message;
  console.warn(`webgpu tests skipped: ${skipReason}`);
}
const cpu = createCpuBackend({ precision: "f64", poison: true });

// WebGPU keeps device-level async work alive between tests; the last test disposes the device.
const options = { sanitizeResources: false, sanitizeOps: false, ignore: gpu === null };

function gpuTest(name: string, fn: (backend: WebGpuBackend) => Promise<void>): void {
  Deno.test({ name, ...options, fn: () => fn(gpu!) });
}

// --- the table-driven helper --------------------------------------------------------------------

/** An input: float samples of a distribution, or explicit int32 ids. */
type InputSpec =
  | { size: number; draw?: "normal" | "positive" | "integers" }
  | { ids: number[] };

/** Outputs of one op, by name; in-place ops name the inputs they write. */
type Outputs = Record<string, Storage>;

interface Case {
  name: string;
  inputs: InputSpec[];
  run: (backend: Backend, inputs: Storage[]) => Outputs;
  tol: number;
}

let nextSeed = 1;

function drawInputs(specs: InputSpec[]): { data: HostArray; dtype: "f32" | "i32" }[] {
  const rng = new Rng(nextSeed++);
  return specs.map((spec) => {
    if ("ids" in spec) return { data: Int32Array.from(spec.ids), dtype: "i32" };
    const normal = rng.normalArray(spec.size);
    let values: Float64Array;
    if (spec.draw === "positive") values = normal.map((v) => 0.5 + Math.abs(v));
    else if (spec.draw === "integers") values = normal.map((v) => Math.round(2 * v));
    else values = normal;
    // Rounded to float32 first, so both backends see identical inputs.
    return { data: Float32Array.from(values), dtype: "f32" };
  });
}

/** Index, values and count of the elements outside tolerance, or null when all match. */
function firstMismatch(actual: HostArray, expected: HostArray, tol: number): string | null {
  if (actual.length !== expected.length) {
    return `length ${actual.length} but the reference has ${expected.length}`;
  }
  let bad = 0;
  let first = "";
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const b = expected[i];
    const ok = !Number.isNaN(a) && !Number.isNaN(b) &&
      Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));
    if (!ok && !(a === b && Number.isFinite(a))) {
      if (bad === 0) first = `element ${i}: webgpu ${a}, cpu ${b}`;
      bad++;
    }
  }
  return bad === 0
    ? null
    : `${bad} of ${actual.length} elements outside tol ${tol}; first ${first}`;
}

/** Runs one case on both backends, asserts each output matches, and releases everything. */
async function check(backend: WebGpuBackend, c: Case): Promise<void> {
  const host = drawInputs(c.inputs);
  const liveBefore = [backend.liveStorages(), cpu.liveStorages()];

  const results: Record<string, HostArray>[] = [];
  for (const engine of [backend, cpu] as Backend[]) {
    const inputs = host.map(({ data, dtype }) => engine.upload(data, dtype));
    const outputs = c.run(engine, inputs);
    const values: Record<string, HostArray> = {};
    for (const [name, storage] of Object.entries(outputs)) {
      values[name] = await engine.read(storage);
    }

    const owned = new Set<Storage>([...inputs, ...Object.values(outputs)]);
    for (const storage of owned) engine.release(storage);
    results.push(values);
  }

  for (const name of Object.keys(results[1])) {
    const mismatch = firstMismatch(results[0][name], results[1][name], c.tol);
    assert.equal(mismatch, null, `${c.name}: output ${name}: ${mismatch}`);
  }
  assert.deepEqual(
    [backend.liveStorages(), cpu.liveStorages()],
    liveBefore,
    `${c.name}: leaked storages`,
  );
}

async function checkAll(backend: WebGpuBackend, cases: Case[]): Promise<void> {
  for (const c of cases) await check(backend, c);
}

// --- elementwise ---------------------------------------------------------------------------------

const UNARY_CASES: { op: UnaryOp; param?: number; draw?: "positive" }[] = [
  { op: "neg" },
  { op: "exp" },
  { op: "log", draw: "positive" },
  { op: "sqrt", draw: "positive" },
  { op: "rsqrt", draw: "positive" },
  { op: "tanh" },
  { op: "relu" },
  { op: "gelu" },
  { op: "silu" },
  { op: "sigmoid" },
  { op: "square" },
  { op: "pow", param: 3 },
  { op: "pow", param: 0.5, draw: "positive" },
  { op: "pow", param: -1.5, draw: "positive" },
  { op: "scale", param: -1.7 },
  { op: "addScalar", param: 0.3 },
];

gpuTest("unary every op odd sizes", async (backend) => {
  const cases: Case[] = [];
  for (const { op, param, draw } of UNARY_CASES) {
    for (const size of [1, 67, 300]) {
      cases.push({
        name: `unary ${op}(${param ?? ""}) size ${size}`,
        inputs: [{ size, draw }],
        run: (b, [x]) => ({ y: b.unary(op, x, param) }),
        tol: ELEMENTWISE_TOL,
      });
    }
  }
  await checkAll(backend, cases);
});

gpuTest("unaryBackward every op odd sizes", async (backend) => {
  const cases: Case[] = UNARY_CASES.map(({ op, param, draw }) => ({
    name: `unaryBackward ${op}(${param ?? ""})`,
    inputs: [{ size: 67, draw }, { size: 67 }],
    run: (b, [x, dy]) => ({ dx: b.unaryBackward(op, x, dy, param) }),
    tol: ELEMENTWISE_TOL,
  }));
  await checkAll(backend, cases);
});

gpuTest("unary tanh and gelu saturate without NaN", async (backend) => {
  const x = backend.upload(Float32Array.from([-100, -20, 20, 100]), "f32");
  for (const op of ["tanh", "gelu", "sigmoid", "silu"] as const) {
    const y = backend.unary(op, x);
    const values = Array.from(await backend.read(y));
    backend.release(y);
    assert.ok(values.every(Number.isFinite), `${op} of ±20, ±100 gave ${values}`);
  }
  backend.release(x);
});

const BROADCAST_SHAPES: [number[], number[], number[]][] = [
  [[7, 13], [7, 13], [7, 13]],
  [[7, 1], [1, 13], [7, 13]],
  [[67], [1], [67]],
  [[1], [1], [1]],
  [[2, 1, 3, 1, 5, 1], [1, 4, 1, 2, 1, 3], [2, 4, 3, 2, 5, 3]],
  [[3, 1, 5], [3, 7, 5], [3, 7, 5]],
  // Same shapes with a multiple of 4 elements run four per thread. The broadcast one does not.
  [[4, 9], [4, 9], [4, 9]],
  [[12], [12], [12]],
  [[3, 4], [1, 4], [3, 4]],
];

gpuTest("binary broadcast up to rank 6", async (backend) => {
  const cases: Case[] = [];
  for (const op of ["add", "sub", "mul", "div"] as const) {
    for (const [aShape, bShape, outShape] of BROADCAST_SHAPES) {
      cases.push({
        name: `binary ${op} [${aShape}] [${bShape}]`,
        inputs: [{ size: product(aShape) }, {
          size: product(bShape),
          draw: op === "div" ? "positive" : undefined,
        }],
        run: (b, [x, y]) => ({ out: b.binary(op, x, aShape, y, bShape, outShape) }),
        tol: ELEMENTWISE_TOL,
      });
    }
  }
  await checkAll(backend, cases);
});

gpuTest("sumToShape reduces broadcast axes", async (backend) => {
  const shapes: [number[], number[]][] = [
    [[7, 13], [1, 13]],
    [[7, 13], [7, 1]],
    [[2, 3, 5, 7], [1, 3, 1, 7]],
    [[3, 1, 5], [1, 1, 1]],
    [[67], [67]],
    [[2, 3, 1, 5, 2, 3], [2, 1, 1, 5, 1, 1]],
  ];
  await checkAll(
    backend,
    shapes.map(([shape, outShape]) => ({
      name: `sumToShape [${shape}] to [${outShape}]`,
      inputs: [{ size: product(shape) }],
      run: (b, [x]) => ({ y: b.sumToShape(x, shape, outShape) }),
      tol: REDUCTION_TOL,
    })),
  );
});

// --- reductions ----------------------------------------------------------------------------------

const REDUCE_SHAPES: [number, number, number][] = [[1, 1, 1], [7, 13, 3], [3, 67, 1], [1, 7, 67], [
  2,
  1500,
  1,
]];

gpuTest("reduce sum and max odd shapes", async (backend) => {
  const cases: Case[] = [];
  for (const op of ["sum", "max"] as const) {
    for (const [outer, n, inner] of REDUCE_SHAPES) {
      cases.push({
        name: `reduce ${op} [${outer}, ${n}, ${inner}]`,
        inputs: [{ size: outer * n * inner }],
        run: (b, [x]) => ({ y: b.reduce(op, x, outer, n, inner) }),
        tol: REDUCTION_TOL,
      });
    }
  }
  await checkAll(backend, cases);
});

gpuTest("maxBackward first maximum with ties", async (backend) => {
  await checkAll(
    backend,
    REDUCE_SHAPES.map(([outer, n, inner]) => ({
      name: `maxBackward [${outer}, ${n}, ${inner}]`,
      // Small integers repeat, so most slices have tied maxima.
      inputs: [{ size: outer * n * inner, draw: "integers" }, { size: outer * inner }],
      run: (b, [x, dy]) => ({ dx: b.maxBackward(x, dy, outer, n, inner) }),
      tol: ELEMENTWISE_TOL,
    })),
  );
});

// --- matmul --------------------------------------------------------------------------------------

gpuTest("matmul transposed odd shapes", async (backend) => {
  const sizes: [number, number, number, number][] = [
    [1, 1, 1, 1],
    [1, 7, 13, 67],
    [2, 65, 67, 17],
    [3, 13, 1, 70],
  ];
  const cases: Case[] = [];
  for (const [batch, m, n, k] of sizes) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        for (const [aBatched, bBatched] of [[true, true], [false, true], [true, false]]) {
          const spec: MatmulSpec = { batch, m, n, k, transA, transB, aBatched, bBatched };
          cases.push({
            name: `matmul ${JSON.stringify(spec)}`,
            inputs: [{ size: (aBatched ? batch : 1) * m * k }, {
              size: (bBatched ? batch : 1) * k * n,
            }],
            run: (b, [x, y]) => ({ c: b.matmul(x, y, spec) }),
            tol: REDUCTION_TOL,
          });
        }
      }
    }
  }
  await checkAll(backend, cases);
});

/**
 * Shapes for each path of the vec4 kernel, all with k a multiple of 4. Some have m and n multiples
 * of 4 but not of 16, so part of a block lies past the edge. Some have m or n odd, so that operand
 * is transposed first when stored [k, rows]. The smallest is one vec4 each way.
 */
const VEC4_MATMUL_SIZES: [number, number, number, number][] = [
  [2, 12, 20, 8],
  [3, 36, 44, 132],
  [2, 13, 20, 12],
  [2, 20, 13, 24],
  [1, 9, 7, 4],
  [1, 4, 4, 4],
];

gpuTest("matmul vec4 layouts", async (backend) => {
  const cases: Case[] = [];
  for (const [batch, m, n, k] of VEC4_MATMUL_SIZES) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        for (
          const [aBatched, bBatched] of [[true, true], [false, true], [true, false], [false, false]]
        ) {
          const spec: MatmulSpec = { batch, m, n, k, transA, transB, aBatched, bBatched };
          cases.push({
            name: `matmul ${JSON.stringify(spec)}`,
            inputs: [{ size: (aBatched ? batch : 1) * m * k }, {
              size: (bBatched ? batch : 1) * k * n,
            }],
            run: (b, [x, y]) => ({ c: b.matmul(x, y, spec) }),
            tol: REDUCTION_TOL,
          });
        }
      }
    }
  }
  await checkAll(backend, cases);
});

// --- softmax and norms ---------------------------------------------------------------------------

gpuTest("softmax plain and causal", async (backend) => {
  const shapes: [number, number, number][] = [[7, 13, 0], [1, 1, 0], [12, 5, 4], [6, 3, 6], [
    3,
    300,
    0,
  ], [8, 70, 4]];
  await checkAll(
    backend,
    shapes.map(([rows, cols, causal]) => ({
      name: `softmax rows ${rows} cols ${cols} causal ${causal}`,
      inputs: [{ size: rows * cols }],
      run: (b, [x]) => ({ y: b.softmax(x, rows, cols, causal) }),
      tol: ELEMENTWISE_TOL,
    })),
  );
});

gpuTest("softmax grid spills past 65535 rows", async (backend) => {
  // 70000 rows need 70000 workgroups, more than one grid dimension holds.
  await check(backend, {
    name: "softmax rows 70000 cols 2",
    inputs: [{ size: 70000 * 2 }],
    run: (b, [x]) => ({ y: b.softmax(x, 70000, 2, 0) }),
    tol: ELEMENTWISE_TOL,
  });
});

gpuTest("softmax fully masked row is zero", async (backend) => {
  // With T = 4 queries over 2 keys, queries 0 and 1 see no key: (r mod 4) + (2 − 4) < 0.
  const x = backend.upload(Float32Array.from([5, -3, 1, 2, 0.5, 0.25, 7, 7]), "f32");
  const y = backend.softmax(x, 4, 2, 4);
  const values = Array.from(await backend.read(y));
  assert.deepEqual(values.slice(0, 4), [0, 0, 0, 0]);
  assert.deepEqual(values.slice(4), [1, 0, 0.5, 0.5]);
  backend.release(x);
  backend.release(y);
});

gpuTest("softmaxBackward odd shapes", async (backend) => {
  const shapes: [number, number][] = [[7, 13], [1, 1], [3, 300]];
  await checkAll(
    backend,
    shapes.map(([rows, cols]) => ({
      name: `softmaxBackward rows ${rows} cols ${cols}`,
      inputs: [{ size: rows * cols }, { size: rows * cols }],
      run: (b, [x, dy]) => {
        const y = b.softmax(x, rows, cols, 0);
        return { y, dx: b.softmaxBackward(y, dy, rows, cols) };
      },
      tol: REDUCTION_TOL,
    })),
  );
});

// Rows past 512 columns run in group mode, shorter ones in thread mode.
const NORM_SHAPES: [number, number][] = [[7, 13], [1, 1], [3, 67], [2, 200], [3, 531]];

gpuTest("layerNorm forward and backward", async (backend) => {
  await checkAll(
    backend,
    NORM_SHAPES.map(([rows, cols]) => ({
      name: `layerNorm rows ${rows} cols ${cols}`,
      inputs: [{ size: rows * cols }, { size: cols }, { size: cols }, { size: rows * cols }],
      run: (b, [x, gamma, beta, dy]) => {
        const { y, mean, rstd } = b.layerNorm(x, gamma, beta, rows, cols, 1e-5);
        const grads = b.layerNormBackward(x, gamma, mean, rstd, dy, rows, cols);
        return { y, mean, rstd, ...grads };
      },
      tol: REDUCTION_TOL,
    })),
  );
});

gpuTest("rmsNorm forward and backward", async (backend) => {
  await checkAll(
    backend,
    NORM_SHAPES.map(([rows, cols]) => ({
      name: `rmsNorm rows ${rows} cols ${cols}`,
      inputs: [{ size: rows * cols }, { size: cols }, { size: rows * cols }],
      run: (b, [x, gamma, dy]) => {
        const { y, rstd } = b.rmsNorm(x, gamma, rows, cols, 1e-6);
        const grads = b.rmsNormBackward(x, gamma, rstd, dy, rows, cols);
        return { y, rstd, ...grads };
      },
      tol: REDUCTION_TOL,
    })),
  );
});

// --- indexing and layout -------------------------------------------------------------------------

function randomIds(seed: number, n: number, vocab: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(vocab));
}

gpuTest("gather and scatterAdd repeated ids", async (backend) => {
  const shapes: [number, number, number][] = [[13, 7, 5], [1, 1, 1], [67, 3, 67], [130, 11, 2]];
  await checkAll(
    backend,
    shapes.map(([n, vocab, dim], i) => ({
      name: `gather/scatterAdd n ${n} vocab ${vocab} dim ${dim}`,
      inputs: [{ size: vocab * dim }, { ids: randomIds(100 + i, n, vocab) }, { size: n * dim }],
      run: (b, [table, ids, dy]) => ({
        rows: b.gather(table, ids, n, vocab, dim),
        dtable: b.scatterAdd(dy, ids, n, vocab, dim),
      }),
      tol: REDUCTION_TOL,
    })),
  );
});

gpuTest("transpose two axes up to rank 6", async (backend) => {
  const cases: [number[], number, number][] = [
    [[7, 13], 0, 1],
    [[2, 3, 5, 7], 1, 3],
    [[1, 4, 1, 6, 5, 3], 0, 5],
    [[67], 0, 0],
    // The axes after the swapped ones contain a multiple of 4 elements, so they move as vec4s.
    [[3, 5, 2, 8], 1, 2],
    [[2, 4, 3, 4], 2, 0],
    [[2, 1, 3, 1, 2, 4], 1, 3],
    [[12], 0, 0],
  ];
  await checkAll(
    backend,
    cases.map(([shape, axis1, axis2]) => ({
      name: `transpose [${shape}] axes ${axis1} ${axis2}`,
      inputs: [{ size: product(shape) }],
      run: (b, [x]) => ({ y: b.transpose(x, shape, axis1, axis2) }),
      tol: ELEMENTWISE_TOL,
    })),
  );
  await check(backend, {
    name: "transpose i32",
    inputs: [{ ids: [1, 2, 3, 4, 5, 6] }],
    run: (b, [x]) => ({ y: b.transpose(x, [2, 3], 0, 1) }),
    tol: 0,
  });
  // As floats, -1 and -4194304 are NaN bit patterns. The vec4 path must move them unchanged.
  await check(backend, {
    name: "transpose i32 vec4",
    inputs: [{ ids: Array.from({ length: 24 }, (_, i) => [i, -1, -4194304, 2 ** 31 - 1][i % 4]) }],
    run: (b, [x]) => ({ y: b.transpose(x, [2, 3, 4], 0, 1) }),
    tol: 0,
  });
});

gpuTest("copyAxis block into middle of axis", async (backend) => {
  const spec = {
    outer: 3,
    inner: 5,
    srcAxisLen: 7,
    dstAxisLen: 13,
    srcStart: 2,
    dstStart: 6,
    len: 4,
  };
  await check(backend, {
    name: "copyAxis",
    inputs: [{ size: 3 * 7 * 5 }, { size: 3 * 13 * 5 }],
    run: (b, [src, dst]) => {
      b.copyAxis(src, dst, spec);
      return { dst };
    },
    tol: 0,
  });
});

gpuTest("fill f32 and i32", async (backend) => {
  await check(backend, {
    name: "fill",
    inputs: [{ size: 67 }, { ids: [1, 2, 3] }],
    run: (b, [x, ids]) => {
      b.fill(x, -2.5);
      b.fill(ids, -7);
      return { x, ids };
    },
    tol: 0,
  });
});

gpuTest("rope forward and inverse", async (backend) => {
  const shapes: [number, number, number][] = [[3, 7, 6], [1, 1, 2], [2, 13, 18]];
  await checkAll(
    backend,
    shapes.map(([outer, seqLen, dim]) => ({
      name: `rope outer ${outer} seqLen ${seqLen} dim ${dim}`,
      inputs: [{ size: outer * seqLen * dim }, { size: (seqLen * dim) / 2 }, {
        size: (seqLen * dim) / 2,
      }],
      run: (b, [x, cos, sin]) => ({
        y: b.rope(x, cos, sin, outer, seqLen, dim, false),
        back: b.rope(x, cos, sin, outer, seqLen, dim, true),
      }),
      tol: ELEMENTWISE_TOL,
    })),
  );
});

// --- cross-entropy -------------------------------------------------------------------------------

gpuTest("crossEntropy with ignored rows", async (backend) => {
  const shapes: [number, number, number[]][] = [
    [7, 13, [3, -100, 0, 12, 5, -100, 1]],
    [1, 1, [0]],
    [3, 300, [299, 0, 17]],
    [4, 5, [-100, -100, -100, -100]],
  ];
  await checkAll(
    backend,
    shapes.map(([rows, cols, targets]) => ({
      name: `crossEntropy rows ${rows} cols ${cols}`,
      inputs: [{ size: rows * cols }, { ids: targets }, { size: 1 }],
      run: (b, [logits, t, dy]) => {
        const { loss, lse, count } = b.crossEntropy(logits, t, rows, cols, -100);
        const dlogits = b.crossEntropyBackward(logits, t, lse, count, dy, rows, cols, -100);
        return { loss, lse, count, dlogits };
      },
      tol: REDUCTION_TOL,
    })),
  );
});

gpuTest("crossEntropy all rows ignored is zero", async (backend) => {
  const logits = backend.upload(Float32Array.from([1, 2, 3, 4]), "f32");
  const targets = backend.upload(Int32Array.from([-100, -100]), "i32");
  const dy = backend.upload(Float32Array.from([1]), "f32");
  const { loss, lse, count } = backend.crossEntropy(logits, targets, 2, 2, -100);
  const dlogits = backend.crossEntropyBackward(logits, targets, lse, count, dy, 2, 2, -100);
  assert.deepEqual(Array.from(await backend.read(loss)), [0]);
  assert.deepEqual(Array.from(await backend.read(dlogits)), [0, 0, 0, 0]);
  for (const s of [logits, targets, dy, loss, lse, count, dlogits]) backend.release(s);
});

// --- optimizer -----------------------------------------------------------------------------------

gpuTest("sumSquares and clipCoefficient", async (backend) => {
  // 12 and 20000 are multiples of 4, so they take the vec4 kernel over one block and several.
  const cases: Case[] = [1, 67, 20001, 12, 20000].map((size) => ({
    name: `sumSquares size ${size}`,
    inputs: [{ size }],
    run: (b, [x]) => {
      const normSq = b.sumSquares(x);
      return {
        normSq,
        tight: b.clipCoefficient(normSq, 0.5),
        loose: b.clipCoefficient(normSq, 1e6),
      };
    },
    tol: REDUCTION_TOL,
  }));
  await checkAll(backend, cases);
});

gpuTest("adamw in place with and without gradScale", async (backend) => {
  const cases: Case[] = [];
  // A size that is a multiple of 4 takes the vec4 kernel.
  for (const [step, size] of [[1, 67], [3, 67], [2, 68]]) {
    for (const scaled of [false, true]) {
      const spec: AdamWSpec = {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weightDecay: 0.1,
        step,
      };
      cases.push({
        name: `adamw step ${step} size ${size} scaled ${scaled}`,
        inputs: [{ size }, { size }, { size }, { size, draw: "positive" }, {
          size: 1,
          draw: "positive",
        }],
        run: (b, [param, grad, m, v, scale]) => {
          b.adamw(param, grad, m, v, scaled ? scale : null, spec);
          return { param, m, v };
        },
        tol: ELEMENTWISE_TOL,
      });
    }
  }
  await checkAll(backend, cases);
});

// --- memory, batching and errors -----------------------------------------------------------------

gpuTest("upload after pending dispatch keeps order", async (backend) => {
  // The released x goes back to the pool, so the next upload may reuse its buffer while the
  // recorded neg still has to read it.
  const x = backend.upload(Float32Array.from([1, 2, 3]), "f32");
  const y = backend.unary("neg", x);
  backend.release(x);
  const z = backend.upload(Float32Array.from([10, 20, 30]), "f32");
  assert.deepEqual(Array.from(await backend.read(y)), [-1, -2, -3]);
  assert.deepEqual(Array.from(await backend.read(z)), [10, 20, 30]);
  backend.release(y);
  backend.release(z);
});

gpuTest("ops batch into one submit per read", async (backend) => {
  const x = backend.upload(Float32Array.from([1, 2, 3, 4]), "f32");
  const before = backend.stats();
  let y = backend.unary("exp", x);
  for (let i = 0; i < 5; i++) {
    const next = backend.unary("scale", y, 0.5);
    backend.release(y);
    y = next;
  }
  await backend.read(y);
  const after = backend.stats();
  assert.equal(after.submits - before.submits, 1);
  // Each op is a poison fill plus its own dispatch.
  assert.equal(after.dispatches - before.dispatches, 12);
  backend.release(x);
  backend.release(y);
});

gpuTest("pool reuses released buffers", (backend) => {
  const first = backend.alloc(1000, "f32");
  backend.release(first);
  const before = backend.stats().buffersCreated;
  const second = backend.alloc(1000, "f32");
  assert.equal(backend.stats().buffersCreated, before);
  backend.release(second);
  return Promise.resolve();
});

gpuTest("alloc over binding limit errors", (backend) => {
  assert.throws(
    () => backend.alloc(2 ** 31, "f32"),
    /8589934592 bytes.*maxStorageBufferBindingSize of \d+ bytes/,
  );
  return Promise.resolve();
});

gpuTest("released storage is rejected", async (backend) => {
  const x = backend.upload(Float32Array.from([1]), "f32");
  backend.release(x);
  assert.throws(() => backend.unary("neg", x), /already released/);
  await assert.rejects(backend.read(x), /already released/);
});

gpuTest("WGSL compile error names line and column", async (backend) => {
  const code = "@compute @workgroup_size(1)\nfn main() {\n  let x: u32 = 1.5;\n}\n";
  await assert.rejects(
    backend.compileWgsl("broken", code),
    /broken:3:7: .*\n[\s\S]*3 \| {3}let x: u32 = 1\.5;/,
  );
});

gpuTest("liveStorages returns to start", async (backend) => {
  const start = backend.liveStorages();
  const x = backend.upload(Float32Array.from([1, 2, 3, 4, 5, 6]), "f32");
  const { y, mean, rstd } = backend.layerNorm(x, x, x, 1, 6, 1e-5);
  assert.equal(backend.liveStorages(), start + 4);
  await backend.read(y);
  for (const s of [x, y, mean, rstd]) backend.release(s);
  assert.equal(backend.liveStorages(), start);
});

gpuTest("empty storage reads back empty", async (backend) => {
  const empty = backend.alloc(0, "f32");
  const y = backend.unary("exp", empty);
  assert.equal((await backend.read(y)).length, 0);
  backend.release(empty);
  backend.release(y);
});

gpuTest("dispose frees the device", async (backend) => {
  assert.match(backend.description, /^webgpu: /);
  await backend.dispose();
  assert.throws(() => backend.alloc(1, "f32"), /disposed/);
});

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
