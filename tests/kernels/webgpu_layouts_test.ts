/** Bind group layouts: kernels with different element types must not share one. */

import assert from "node:assert/strict";

Deno.test({
  name: "scalar op after vec4 matmul",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { createWebGpuBackend } = await import("../../kernels/webgpu/backend.ts");
    const gpu = await createWebGpuBackend();
    // A one-element storage is 4 bytes, below a vec4 binding's 16-byte minimum.
    const one = gpu.upload(Float32Array.from([1]), "f32");
    const a = gpu.upload(new Float32Array(64).fill(1), "f32");
    const spec = { batch: 1, m: 8, n: 8, k: 8, transA: false, transB: true };
    const c = gpu.matmul(a, a, { ...spec, aBatched: true, bBatched: true });
    const sum = gpu.binary("add", one, [1], one, [1], [1]);
    assert.equal((await gpu.read(c))[0], 8);
    assert.equal((await gpu.read(sum))[0], 2);
    await gpu.dispose();
  },
});
