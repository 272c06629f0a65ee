/** Finite-difference gradient checks of the fused attention op on the float64 CPU backend. */

import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { attention, Tensor } from "../../tensor/mod.ts";
import { gradcheck } from "../helpers/gradcheck.ts";

const backend = createCpuBackend({ precision: "f64" });

const B = 2;
const H = 4;
const KV = 2;
const T = 5;
const D = 3;

const qkv = [{ shape: [B, H, T, D] }, { shape: [B, KV, T, D] }, { shape: [B, KV, T, D] }];

Deno.test("gradcheck attention grouped query", async () => {
  await gradcheck(backend, "attention", qkv, (q, k, v) => attention(q, k, v));
});

Deno.test("gradcheck attention sink logit per head", async () => {
  await gradcheck(
    backend,
    "attention sink",
    [...qkv, { shape: [H] }],
    (q, k, v, sink) => attention(q, k, v, { sink, window: 3 }),
  );
});

Deno.test("gradcheck attention key bias", async () => {
  await gradcheck(
    backend,
    "attention key bias",
    [...qkv, { shape: [B, KV, T] }],
    (q, k, v, bias) => attention(q, k, v, { bias }),
  );
});

Deno.test("gradcheck attention full bias with key mask", async () => {
  const keyMask = new Float64Array(B * T).fill(1);
  keyMask[0] = 0;
  keyMask[T + 2] = 0;
  await gradcheck(
    backend,
    "attention full bias",
    [...qkv, { shape: [B, H, T, T] }],
    (q, k, v, bias) =>
      attention(q, k, v, { bias, keyMask: Tensor.fromArray(backend, keyMask, [B, T]) }),
  );
});

Deno.test("gradcheck attention fully masked rows", async () => {
  // Batch entry 0 hides every key: its rows are zero and every gradient stays finite.
  const keyMask = new Float64Array(B * T).fill(1);
  keyMask.fill(0, 0, T);
  await gradcheck(
    backend,
    "attention fully masked",
    [...qkv, { shape: [H] }],
    (q, k, v, sink) =>
      attention(q, k, v, { sink, keyMask: Tensor.fromArray(backend, keyMask, [B, T]) }),
  );
});
