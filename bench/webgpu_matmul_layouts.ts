/**
 * Times the WebGPU matmul at the tiny-GPT step's shapes in all four transA/transB layouts. The
 * runs are interleaved: each round times every (shape, layout) once, so machine load hits all
 * alike. Prints the median ms per product over the rounds.
 *
 * Run: npx deno run -A bench/webgpu_matmul_layouts.ts [--rounds N]   (default 7)
 */

import type { Backend, MatmulSpec, Storage } from "../kernels/backend.ts";
import { createWebGpuBackend } from "../kernels/webgpu/backend.ts";
import { Rng } from "../tensor/mod.ts";

const roundsFlag = Deno.args.indexOf("--rounds");
const rounds = roundsFlag < 0 ? 7 : Number(Deno.args[roundsFlag + 1]);
/** Products chained per timing, so one submit and readback are a small part of it. */
const CHAIN = 8;

/** [batch, m, n, k] of the step's products. */
const SHAPES: [number, number, number, number][] = [
  [1, 1024, 128, 128],
  [1, 128, 128, 1024],
  [1, 1024, 512, 128],
  [1, 512, 128, 1024],
  [32, 128, 128, 32],
  [32, 128, 32, 128],
];

function randomStorage(backend: Backend, size: number, rng: Rng): Storage {
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = rng.normal();
  return backend.upload(data, "f32");
}

const backend = await createWebGpuBackend();
const rng = new Rng(1);
const cases = SHAPES.flatMap(([batch, m, n, k]) =>
  [[false, true], [false, false], [true, false], [true, true]].map(([transA, transB]) => {
    const spec: MatmulSpec = { batch, m, n, k, transA, transB, aBatched: true, bBatched: true };
    return {
      label: `b${batch} m${m} n${n} k${k} tA${+transA} tB${+transB}`,
      spec,
      a: randomStorage(backend, batch * m * k, rng),
      b: randomStorage(backend, batch * k * n, rng),
      times: [] as number[],
    };
  })
);

for (let round = 0; round < rounds + 1; round++) {
  for (const c of cases) {
    const start = performance.now();
    const outputs = Array.from({ length: CHAIN }, () => backend.matmul(c.a, c.b, c.spec));
    backend.flush();
    await backend.read(outputs[CHAIN - 1]);
    for (const out of outputs) backend.release(out);
    if (round > 0) c.times.push((performance.now() - start) / CHAIN);
  }
}
console.log("| product | ms median (min) |");
console.log("| --- | --- |");
for (const c of cases) {
  const sorted = [...c.times].sort((x, y) => x - y);
  const median = sorted[Math.floor(sorted.length / 2)];
  console.log(`| ${c.label} | ${median.toFixed(2)} (${sorted[0].toFixed(2)}) |`);
}
await backend.dispose();
