/**
 * Mixture-of-experts backend ops: the CPU backend against small hand-computed results, and the
 * WebGPU backend against the float64 CPU backend on seeded random inputs of awkward shapes,
 * including empty experts, one expert with every row and empty (−1) assignments.
 *
 * Run: `npx deno test -A tests/kernels/moe_kernels_test.ts`. Without a WebGPU adapter the WebGPU
 * comparisons are skipped with the reason.
 */

import assert from "node:assert/strict";
import type { Backend, HostArray, Storage } from "../../kernels/backend.ts";
import { BackendUnavailableError } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../../kernels/webgpu/backend.ts";
import { Rng } from "../../tensor/rng.ts";

/** Tolerance relative to max(1, |reference|) for sums and products. */
const REDUCTION_TOL = 1e-4;

let gpu: WebGpuBackend | null = null;
try {
  gpu = await createWebGpuBackend({ poison: true });
} catch (error) {
  if (!(error instanceof BackendUnavailableError)) throw error;
  console.warn(`webgpu moe kernel tests skipped: ${error.message}`);
}
const cpu = createCpuBackend({ precision: "f64", poison: true });

const gpuOptions = { sanitizeResources: false, sanitizeOps: false, ignore: gpu === null };

function gpuTest(name: string, fn: (backend: WebGpuBackend) => Promise<void>): void {
  Deno.test({ name, ...gpuOptions, fn: () => fn(gpu!) });
}

// --- helpers ------------------------------------------------------------------------------------

type HostInput = { data: HostArray; dtype: "f32" | "i32" };

function floats(values: number[]): HostInput {
  return { data: Float32Array.from(values), dtype: "f32" };
}

function ints(values: number[]): HostInput {
  return { data: Int32Array.from(values), dtype: "i32" };
}

function normals(rng: Rng, size: number): HostInput {
  return floats(Array.from(rng.normalArray(size)));
}

/** Small integers, so that many scores tie. */
function integers(rng: Rng, size: number): HostInput {
  return floats(Array.from({ length: size }, () => rng.int(4)));
}

/** Expert ids in [−1, numExperts), or every id equal to `only` when it is given. */
function expertIds(rng: Rng, count: number, numExperts: number, only?: number): HostInput {
  return ints(
    Array.from({ length: count }, () => only ?? (rng.int(numExperts + 1) - 1)),
  );
}

/** Runs `run` on a backend with uploaded inputs and reads back every output. */
async function runOn(
  backend: Backend,
  inputs: HostInput[],
  run: (backend: Backend, inputs: Storage[]) => Record<string, Storage>,
): Promise<Record<string, HostArray>> {
  const storages = inputs.map(({ data, dtype }) => backend.upload(data, dtype));
  const outputs = run(backend, storages);
  const values: Record<string, HostArray> = {};
  for (const [name, storage] of Object.entries(outputs)) values[name] = await backend.read(storage);
  for (const storage of new Set([...storages, ...Object.values(outputs)])) {
    backend.release(storage);
  }
  return values;
}

function mismatch(actual: HostArray, expected: HostArray, tol: number): string | null {
  if (actual.length !== expected.length) {
    return `length ${actual.length} but the reference has ${expected.length}`;
  }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const b = expected[i];
    const ok = !Number.isNaN(a) && !Number.isNaN(b) &&
      Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));
    if (!ok) return `element ${i}: webgpu ${a}, cpu ${b}`;
  }
  return null;
}

/** Runs one case on both backends and compares every output (integers exactly). */
async function compare(
  backend: WebGpuBackend,
  name: string,
  inputs: HostInput[],
  run: (backend: Backend, inputs: Storage[]) => Record<string, Storage>,
): Promise<void> {
  const liveBefore = [backend.liveStorages(), cpu.liveStorages()];
  const expected = await runOn(cpu, inputs, run);
  const actual = await runOn(backend, inputs, run);
  for (const output of Object.keys(expected)) {
    const exact = expected[output] instanceof Int32Array;
    const problem = mismatch(actual[output], expected[output], exact ? 0 : REDUCTION_TOL);
    assert.equal(problem, null, `${name}: output ${output}: ${problem}`);
  }
  assert.deepEqual([backend.liveStorages(), cpu.liveStorages()], liveBefore, `${name}: leaked`);
}

/** Offsets of `rows` rows split into random group sizes, some empty, leaving `tail` rows. */
function randomOffsets(rng: Rng, numExperts: number, rows: number, tail: number): number[] {
  const cuts = Array.from({ length: numExperts - 1 }, () => rng.int(rows - tail + 1));
  cuts.sort((a, b) => a - b);
  return [0, ...cuts, rows - tail];
}

// --- CPU semantics -------------------------------------------------------------------------------

Deno.test("topK ties pick lowest index first", async () => {
  const out = await runOn(cpu, [floats([0.5, 0.5, 0.5, 0.1])], (b, [s]) => b.topK(s, 1, 4, 2));
  assert.deepEqual(Array.from(out.indices), [0, 1]);
  assert.deepEqual(Array.from(out.values), [0.5, 0.5]);
});

Deno.test("topK orders descending per row", async () => {
  const scores = floats([0.1, 0.9, 0.3, 0.9, 3, 2, 1, 0]);
  const out = await runOn(cpu, [scores], (b, [s]) => b.topK(s, 2, 4, 3));
  assert.deepEqual(Array.from(out.indices), [1, 3, 2, 0, 1, 2]);
});

Deno.test("sortByExpert stable with empty experts", async () => {
  const experts = ints([2, 0, -1, 2, 0, 3]);
  const out = await runOn(cpu, [experts], (b, [e]) => b.sortByExpert(e, 6, 4));
  assert.deepEqual(Array.from(out.offsets), [0, 2, 2, 4, 5]);
  assert.deepEqual(Array.from(out.order), [1, 4, 0, 3, 5, -1]);
  assert.deepEqual(Array.from(out.positions), [2, 0, -1, 3, 1, 4]);
});

Deno.test("sortByExpert every token to expert 0", async () => {
  const out = await runOn(cpu, [ints([0, 0, 0, 0])], (b, [e]) => b.sortByExpert(e, 4, 4));
  assert.deepEqual(Array.from(out.offsets), [0, 4, 4, 4, 4]);
  assert.deepEqual(Array.from(out.order), [0, 1, 2, 3]);
});

Deno.test("dropOverCapacity drops last by position", async () => {
  const out = await runOn(
    cpu,
    [ints([0, 0, 0, 0, 0])],
    (b, [e]) => ({ kept: b.dropOverCapacity(e, null, 5, 4, 4) }),
  );
  assert.deepEqual(Array.from(out.kept), [0, 0, 0, 0, -1]);
});

Deno.test("dropOverCapacity drops lowest priority", async () => {
  const out = await runOn(
    cpu,
    [ints([0, 0, 0, 0, 0]), floats([0.9, 0.2, 0.8, 0.7, 0.6])],
    (b, [e, p]) => ({ kept: b.dropOverCapacity(e, p, 5, 4, 4) }),
  );
  assert.deepEqual(Array.from(out.kept), [0, -1, 0, 0, 0]);
});

Deno.test("groupedMatmul matches per-group products", async () => {
  // Two experts of [dOut 2, dIn 3]; rows 0–1 go to expert 0, row 2 to expert 1, row 3 is a tail.
  const x = floats([1, 2, 3, 0, 1, 0, 2, 0, 1, 5, 5, 5]);
  const w = floats([1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 2]);
  const out = await runOn(
    cpu,
    [x, w, ints([0, 2, 3])],
    (b, [xs, ws, o]) => ({ y: b.groupedMatmul(xs, ws, o, 4, 2, 3, 2) }),
  );
  assert.deepEqual(Array.from(out.y), [1, 5, 0, 1, 3, 2, 0, 0]);
});

Deno.test("groupedMatmulWeightGrad sums rows per group", async () => {
  const dy = floats([1, 0, 0, 1, 2, 2]);
  const x = floats([1, 2, 3, 4, 5, 6]);
  const out = await runOn(
    cpu,
    [dy, x, ints([0, 2, 2, 3])],
    (b, [g, xs, o]) => ({ dw: b.groupedMatmulWeightGrad(g, xs, o, 3, 3, 2, 2) }),
  );
  // Expert 0: [1,0]⊗[1,2] + [0,1]⊗[3,4]; expert 1 is empty; expert 2: [2,2]⊗[5,6].
  assert.deepEqual(Array.from(out.dw), [1, 2, 3, 4, 0, 0, 0, 0, 10, 12, 10, 12]);
});

Deno.test("gatherRows negative index gives zero row", async () => {
  const out = await runOn(
    cpu,
    [ints([1, 2, 3, 4]), ints([1, -1, 0])],
    (b, [x, i]) => ({ y: b.gatherRows(x, i, 2, 3, 2) }),
  );
  assert.deepEqual(Array.from(out.y), [3, 4, 0, 0, 1, 2]);
});

// --- WebGPU against the CPU ----------------------------------------------------------------------

gpuTest("webgpu topK random and tied scores", async (backend) => {
  const rng = new Rng(11);
  await compare(backend, "ties", [floats([0.5, 0.5, 0.5, 0.1])], (b, [s]) => b.topK(s, 1, 4, 2));
  const shapes: [number, number, number][] = [[7, 13, 3], [1, 1, 1], [5, 17, 17], [67, 8, 2]];
  for (const [rows, cols, k] of shapes) {
    await compare(
      backend,
      `normal ${rows}×${cols} k${k}`,
      [normals(rng, rows * cols)],
      (b, [s]) => b.topK(s, rows, cols, k),
    );
    await compare(
      backend,
      `tied ${rows}×${cols} k${k}`,
      [integers(rng, rows * cols)],
      (b, [s]) => b.topK(s, rows, cols, k),
    );
  }
});

gpuTest("webgpu gather and scatter columns", async (backend) => {
  const rng = new Rng(12);
  for (const [rows, cols, k] of [[7, 13, 3], [1, 1, 1], [9, 5, 5]]) {
    const indices = ints(Array.from({ length: rows * k }, () => rng.int(cols + 1) - 1));
    await compare(
      backend,
      `columns ${rows}×${cols} k${k}`,
      [normals(rng, rows * cols), indices, normals(rng, rows * k)],
      (b, [x, i, dy]) => ({
        gathered: b.gatherColumns(x, i, rows, cols, k),
        scattered: b.scatterColumns(dy, i, rows, cols, k),
      }),
    );
  }
});

gpuTest("webgpu gather and scatter rows", async (backend) => {
  const rng = new Rng(13);
  for (const [n, m, cols] of [[7, 13, 5], [1, 1, 1], [3, 20, 2]]) {
    const index = ints(Array.from({ length: m }, () => rng.int(n + 1) - 1));
    const table = ints(Array.from({ length: n * cols }, () => rng.int(1000) - 500));
    await compare(
      backend,
      `rows n${n} m${m} cols${cols}`,
      [normals(rng, n * cols), index, normals(rng, m * cols), table],
      (b, [x, i, dy, t]) => ({
        gathered: b.gatherRows(x, i, n, m, cols),
        gatheredInts: b.gatherRows(t, i, n, m, cols),
        scattered: b.scatterAddRows(dy, i, m, n, cols),
      }),
    );
  }
});

gpuTest("webgpu dispatch plan ops", async (backend) => {
  const rng = new Rng(14);
  const cases: [string, number, number, number | undefined][] = [
    ["random", 23, 5, undefined],
    ["all to expert 0", 4, 4, 0],
    ["one assignment", 1, 3, undefined],
    ["many experts", 37, 70, undefined],
  ];
  for (const [name, count, numExperts, only] of cases) {
    for (const capacity of [0, 1, 3, 1000]) {
      await compare(
        backend,
        `${name} capacity ${capacity}`,
        [expertIds(rng, count, numExperts, only), integers(rng, count)],
        (b, [e, p]) => ({
          byPosition: b.dropOverCapacity(e, null, count, numExperts, capacity),
          byPriority: b.dropOverCapacity(e, p, count, numExperts, capacity),
        }),
      );
    }
    await compare(
      backend,
      `${name} sort`,
      [expertIds(rng, count, numExperts, only)],
      (b, [e]) => b.sortByExpert(e, count, numExperts),
    );
  }
});

gpuTest("webgpu groupedMatmul and weight gradient", async (backend) => {
  const rng = new Rng(15);
  // [rows, experts, dIn, dOut, tail rows, every row to expert 0]
  const cases: [number, number, number, number, number, boolean][] = [
    [13, 4, 7, 5, 2, false],
    [4, 4, 8, 12, 0, true],
    [1, 1, 1, 1, 0, false],
    [29, 6, 16, 9, 3, false],
    [17, 3, 5, 19, 17, false],
  ];
  for (const [rows, numExperts, dIn, dOut, tail, allToFirst] of cases) {
    const offsets = allToFirst
      ? [0, ...Array(numExperts).fill(rows - tail)]
      : randomOffsets(rng, numExperts, rows, tail);
    await compare(
      backend,
      `grouped rows${rows} E${numExperts} ${dIn}→${dOut} offsets [${offsets}]`,
      [
        normals(rng, rows * dIn),
        normals(rng, numExperts * dOut * dIn),
        ints(offsets),
        normals(rng, rows * dOut),
      ],
      (b, [x, w, o, dy]) => ({
        y: b.groupedMatmul(x, w, o, rows, numExperts, dIn, dOut),
        dw: b.groupedMatmulWeightGrad(dy, x, o, rows, numExperts, dIn, dOut),
      }),
    );
  }
});

gpuTest("webgpu moe kernels dispose", async (backend) => {
  await backend.dispose();
});
