/**
 * Tests of the fast CPU backend's WebAssembly heap: block reuse, views that survive growth, the
 * fallback to ordinary arrays past the storage limit, and kernels that read and write storages in
 * place giving the same bits as the copying path.
 *
 * Run: npx deno test -A tests/kernels/wasm_heap_test.ts
 */

import assert from "node:assert/strict";
import type { MatmulSpec, Storage } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createFastCpuBackend } from "../../kernels/cpu/fast_backend.ts";
import { CpuStorage } from "../../kernels/cpu/storage.ts";
import { WasmGemm } from "../../kernels/cpu/wasm/gemm.ts";
import { WasmHeap } from "../../kernels/cpu/wasm/heap.ts";
import { Rng } from "../../tensor/mod.ts";
import { runTinyStep, TINY_GPT, tinyGpt } from "../../bench/moelab.ts";

function randomFloats(size: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: size }, () => rng.normal());
}

/** True when a storage's data lives in a WebAssembly heap (a SharedArrayBuffer). */
function inHeap(storage: Storage): boolean {
  assert.ok(storage instanceof CpuStorage, "a cpu storage");
  return storage.data.buffer instanceof SharedArrayBuffer;
}

Deno.test("heap views survive growth", () => {
  const heap = WasmHeap.create();
  const small = heap.allocate(10)!;
  small.set(randomFloats(10, 1));
  const before = Float32Array.from(small);
  const bytesBefore = heap.byteLength;

  const large = heap.allocate(1 << 20);
  assert.ok(large !== null, "large block allocated");
  assert.ok(heap.byteLength > bytesBefore, "memory grew");
  assert.deepEqual(Float32Array.from(small), before, "old view keeps its values");
  assert.ok(heap.address(small) >= 0, "old view still a heap view");
  assert.ok(heap.address(large) > heap.address(small), "new block above the old one");
});

Deno.test("heap reuses released blocks by size", () => {
  const heap = WasmHeap.create();
  const first = heap.allocate(100)!;
  const address = heap.address(first);
  heap.release(first);

  // 97 and 100 floats both round up to a block of 112.
  const same = heap.allocate(97)!;
  assert.equal(heap.address(same), address, "block of the same size reused");
  const other = heap.allocate(200)!;
  assert.notEqual(heap.address(other), address, "larger block is a new one");
});

Deno.test("heap address of ordinary array", () => {
  const heap = WasmHeap.create();
  assert.equal(heap.address(new Float32Array(8)), -1, "ordinary Float32Array");
  assert.equal(heap.address(new Int32Array(8)), -1, "ordinary Int32Array");
});

Deno.test("heap refuses past its maximum", () => {
  const heap = WasmHeap.create({ maximumPages: 4 });
  assert.equal(heap.allocate(70_000), null, "280 KB in a 256 KiB memory");
  const storages = heap.storageBlocks();
  assert.equal(storages.allocate(50_000), null, "200 KB past the 192 KiB storage limit");
  assert.ok(heap.allocate(50_000) !== null, "the same 200 KB as scratch");
  assert.throws(
    () => heap.scratch(70_000, "matmul", "split the batch"),
    /matmul: the kernel's scratch needs 280000 more bytes, past the 0\.25 MiB maximum .*; split the batch/,
  );
  assert.throws(() => WasmHeap.create({ maximumPages: 0 }), /maximumPages is 0/);
});

Deno.test("fast backend zeroes reused blocks", async () => {
  const fast = createFastCpuBackend({ matmulThreads: 1 });
  const filled = fast.upload(randomFloats(100, 2), "f32");
  fast.release(filled);

  const zeros = fast.alloc(100, "f32");
  assert.ok(inHeap(zeros), "allocated in the heap");
  assert.deepEqual(await fast.read(zeros), new Float32Array(100), "reused block reads as zeros");
  await fast.dispose();
});

Deno.test("fast backend falls back past its heap", async () => {
  // 16 pages are 1 MiB, so storages stop at 768 KiB.
  const fast = createFastCpuBackend({ heapPages: 16, matmulThreads: 1 });
  const reference = createCpuBackend({ precision: "f64" });
  const filler = fast.upload(new Float32Array(196_000), "f32");
  assert.ok(inHeap(filler), "784 KB filler in the heap");

  const spec: MatmulSpec = {
    batch: 1,
    m: 50,
    n: 40,
    k: 30,
    transA: false,
    transB: false,
    aBatched: true,
    bBatched: true,
  };
  const a = randomFloats(spec.m * spec.k, 3);
  const b = randomFloats(spec.k * spec.n, 4);
  const fa = fast.upload(a, "f32");
  const fb = fast.upload(b, "f32");
  assert.equal(inHeap(fa), false, "A past the limit is an ordinary array");
  const out = fast.matmul(fa, fb, spec);
  assert.equal(inHeap(out), false, "C past the limit is an ordinary array");

  const actual = await fast.read(out);
  const expected = await reference.read(
    reference.matmul(reference.upload(a, "f32"), reference.upload(b, "f32"), spec),
  );
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) < 1e-4, `C[${i}] ${actual[i]} vs ${expected[i]}`);
  }

  // GELU reads and writes ordinary arrays through scratch blocks.
  const gelu = await fast.read(fast.unary("gelu", fa));
  const geluExpected = await reference.read(reference.unary("gelu", reference.upload(a, "f32")));
  for (let i = 0; i < gelu.length; i++) {
    const error = Math.abs(gelu[i] - geluExpected[i]);
    assert.ok(error < 1e-5, `gelu[${i}] ${gelu[i]} vs ${geluExpected[i]}`);
  }
  await fast.dispose();
  await reference.dispose();
});

/** Products that take each in-place and scratch path of the matmul. */
const SPECS: MatmulSpec[] = [
  // m not a multiple of 6 in every batch entry; n a multiple of 8, so C is written in place.
  { batch: 3, m: 13, n: 16, k: 40, transA: false, transB: false, aBatched: true, bBatched: true },
  // n not a multiple of 8: C goes through scratch.
  { batch: 2, m: 7, n: 13, k: 9, transA: false, transB: true, aBatched: false, bBatched: true },
  // Transposed A read in place (k ≤ 256) and packed (k > 256).
  { batch: 2, m: 11, n: 24, k: 37, transA: true, transB: false, aBatched: true, bBatched: false },
  { batch: 1, m: 17, n: 8, k: 300, transA: true, transB: true, aBatched: true, bBatched: true },
  // k = 1024 and 9 panels of B: runs in column blocks of 8 panels.
  { batch: 1, m: 7, n: 72, k: 1024, transA: false, transB: false, aBatched: true, bBatched: true },
];

Deno.test("matmul in place matches the copying path", async () => {
  // Storages of the backend are heap views and take the in-place paths; ordinary arrays passed to
  // a second WasmGemm are copied in. Both sum in the same order, so the bits must agree.
  const fast = createFastCpuBackend({ matmulThreads: 1 });
  const copying = WasmGemm.create(WasmHeap.create(), { threads: 1 });
  let seed = 100;
  for (const spec of SPECS) {
    const a = randomFloats((spec.aBatched ? spec.batch : 1) * spec.m * spec.k, seed++);
    const b = randomFloats((spec.bBatched ? spec.batch : 1) * spec.k * spec.n, seed++);
    const fa = fast.upload(a, "f32");
    const fb = fast.upload(b, "f32");
    assert.ok(inHeap(fa), "A in the heap");
    assert.ok(inHeap(fb), "B in the heap");

    const actual = await fast.read(fast.matmul(fa, fb, spec));
    const expected = new Float32Array(spec.batch * spec.m * spec.n);
    copying.matmul(a, b, expected, spec);
    assert.deepEqual(actual, expected, `in place ${JSON.stringify(spec)}`);
  }
  copying.dispose();
  await fast.dispose();
});

Deno.test("matmul in place on two threads matches one", async () => {
  const oneThread = createFastCpuBackend({ matmulThreads: 1 });
  const twoThreads = createFastCpuBackend({ matmulThreads: 2 });
  // The worker starts on the first large product; run one so the later ones are split.
  const spec: MatmulSpec = {
    batch: 2,
    m: 131,
    n: 136,
    k: 523,
    transA: false,
    transB: false,
    aBatched: true,
    bBatched: false,
  };
  const a = randomFloats(spec.batch * spec.m * spec.k, 7);
  const b = randomFloats(spec.k * spec.n, 8);
  const [oa, ob, ta, tb] = [
    oneThread.upload(a, "f32"),
    oneThread.upload(b, "f32"),
    twoThreads.upload(a, "f32"),
    twoThreads.upload(b, "f32"),
  ];
  twoThreads.release(twoThreads.matmul(ta, tb, spec));
  await new Promise((resolve) => setTimeout(resolve, 500));

  const expected = await oneThread.read(oneThread.matmul(oa, ob, spec));
  const actual = await twoThreads.read(twoThreads.matmul(ta, tb, spec));
  assert.deepEqual(actual, expected, "two threads give the same bits");
  await oneThread.dispose();
  await twoThreads.dispose();
});

Deno.test("heap stops growing over training steps", async () => {
  const backend = createFastCpuBackend({ matmulThreads: 1 });
  const sizes = { ...TINY_GPT, numLayers: 1, dModel: 32, seqLen: 16, batchSize: 2, vocabSize: 64 };
  const gpt = tinyGpt(backend, sizes);
  const rng = new Rng(5);
  const step = async () => {
    const { loss, normSq } = runTinyStep(backend, gpt, rng, sizes);
    await loss.item();
    loss.dispose();
    normSq.dispose();
  };

  for (let i = 0; i < 3; i++) await step();
  const bytes = backend.heapBytes;
  const live = backend.liveStorages();
  for (let i = 0; i < 20; i++) await step();
  assert.equal(backend.heapBytes, bytes, "heap bytes after 20 more steps");
  assert.equal(backend.liveStorages(), live, "live storages after 20 more steps");
  await backend.dispose();
});
