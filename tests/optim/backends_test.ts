/** AdamW and Muon take the same five steps on WebGPU as on the CPU backend. */

import assert from "node:assert/strict";
import type { Backend } from "../../kernels/backend.ts";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { createOptimizer } from "../../optim/create.ts";
import { zeroGrad } from "../../optim/clip.ts";
import { Rng, Tensor } from "../../tensor/mod.ts";

const SHAPES: Record<string, number[]> = {
  "blocks.0.mlp.up.weight": [13, 7],
  "blocks.0.mlp.down.weight": [7, 13],
  "blocks.0.mlpNorm.weight": [7],
  "tokenEmbedding.weight": [11, 7],
};

/** Runs five updates with fixed random gradients and returns every parameter's final values. */
async function fiveSteps(backend: Backend, name: "adamw" | "muon"): Promise<Float64Array[]> {
  const rng = new Rng(21);
  const params = new Map<string, Tensor>();
  for (const [key, shape] of Object.entries(SHAPES)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const p = Tensor.fromArray(backend, rng.normalArray(size, 0.5), shape, "f32");
    p.requiresGrad = true;
    p.persistent = true;
    params.set(key, p);
  }
  const { optimizer } = createOptimizer(params, { name, lr: 0.01, weightDecay: 0.1 });
  const scaleRng = new Rng(22);
  for (let step = 0; step < 5; step++) {
    for (const p of params.values()) {
      p.grad = Tensor.fromArray(backend, scaleRng.normalArray(p.size), p.shape, "f32");
      p.grad.persistent = true;
    }
    const gradScale = Tensor.fromArray(backend, [0.5 + 0.1 * step], [1], "f32");
    optimizer.update(1 - 0.1 * step, gradScale);
    gradScale.dispose();
    zeroGrad(params.values());
  }
  const out = [];
  for (const p of params.values()) out.push(Float64Array.from(await p.data()));
  optimizer.dispose();
  for (const p of params.values()) p.dispose();
  return out;
}

for (const name of ["adamw", "muon"] as const) {
  Deno.test({
    name: `${name} five steps webgpu matches cpu`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const { createWebGpuBackend } = await import("../../kernels/webgpu/backend.ts");
      const gpu = await createWebGpuBackend({ poison: true });
      const expected = await fiveSteps(createCpuBackend({ precision: "f64" }), name);
      const actual = await fiveSteps(gpu, name);
      await gpu.dispose();
      const names = Object.keys(SHAPES);
      for (let p = 0; p < expected.length; p++) {
        for (let i = 0; i < expected[p].length; i++) {
          const error = Math.abs(actual[p][i] - expected[p][i]) /
            Math.max(1, Math.abs(expected[p][i]));
          assert.ok(
            error <= 1e-4,
            `${names[p]}[${i}]: webgpu ${actual[p][i]} cpu ${expected[p][i]}`,
          );
        }
      }
    },
  });
}
