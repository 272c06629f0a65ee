/**
 * Peer libraries measured in the same process as moelab: jax-js 0.1.25 (WebGPU and WebAssembly
 * backends) and TensorFlow.js 4.22 (WebGPU backend). Both are imported dynamically, so tests and
 * training runs never load them, and a peer that fails to load or initialise is reported absent
 * with the reason.
 */

import { matmulsPerRepetition } from "./moelab.ts";
import { time, type Timing, type TimingOptions } from "./timing.ts";

/** A peer's timing, or why it could not run. */
export type PeerResult = { timing: Timing } | { absent: string };

export function reason(error: unknown): string {
  return error instanceof Error ? error.message.split("\n")[0] : String(error);
}

function randomFloats(size: number): Float32Array {
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = Math.random() * 2 - 1;
  return data;
}

// deno-lint-ignore no-explicit-any
type Module = any;
let jaxModule: Promise<{ jax: Module; devices: string[] }> | null = null;

/** Imports jax-js once and initialises the devices it can use here. */
export function loadJax(): Promise<{ jax: Module; devices: string[] }> {
  jaxModule ??= (async () => {
    const jax = await import("@jax-js/jax");
    const devices: string[] = await jax.init("wasm", "webgpu");
    return { jax, devices };
  })();
  return jaxModule;
}

/** Times n×n matmuls on a jax-js device ("wasm" or "webgpu"), waiting with blockUntilReady. */
export async function jaxMatmul(
  device: "wasm" | "webgpu",
  n: number,
  options: TimingOptions,
): Promise<PeerResult> {
  try {
    const { jax, devices } = await loadJax();
    if (!devices.includes(device)) return { absent: `jax-js has no ${device} device here` };
    const np = jax.numpy;
    const a = np.array(randomFloats(n * n), { shape: [n, n], device });
    const b = np.array(randomFloats(n * n), { shape: [n, n], device });
    const count = matmulsPerRepetition(n);
    const timing = await time(async () => {
      // jax-js evaluates lazily: disposing each product before the next one made 256×256 products
      // report 290 GFLOP/s, beyond this CPU, so every product is kept and awaited. `.ref` keeps a
      // and b alive for the next product.
      const products = [];
      for (let i = 0; i < count; i++) products.push(np.matmul(a.ref, b.ref));
      await jax.blockUntilReady(products);
      for (const product of products) product.dispose();
    }, options);
    a.dispose();
    b.dispose();
    return { timing };
  } catch (error) {
    return { absent: `jax-js ${device} failed: ${reason(error)}` };
  }
}

let tfModule: Promise<Module> | null = null;

/** Imports TensorFlow.js with its WebGPU backend once and selects that backend. */
export function loadTf(): Promise<Module> {
  tfModule ??= (async () => {
    const tf = await import("@tensorflow/tfjs");
    await import("@tensorflow/tfjs-backend-webgpu");
    const ok = await tf.setBackend("webgpu");
    if (!ok) throw new Error("tf.setBackend('webgpu') returned false");
    await tf.ready();
    return tf;
  })();
  return tfModule;
}

/** Times n×n matmuls on TensorFlow.js's WebGPU backend, waiting by reading the last product. */
export async function tfMatmul(n: number, options: TimingOptions): Promise<PeerResult> {
  try {
    const tf = await loadTf();
    const a = tf.tensor2d(randomFloats(n * n), [n, n]);
    const b = tf.tensor2d(randomFloats(n * n), [n, n]);
    const count = matmulsPerRepetition(n);
    const timing = await time(async () => {
      const products = [];
      for (let i = 0; i < count; i++) products.push(tf.matMul(a, b));
      // Reading the last product waits for the queue, which runs the products in order.
      await products[count - 1].data();
      for (const product of products) product.dispose();
    }, options);
    a.dispose();
    b.dispose();
    return { timing };
  } catch (error) {
    return { absent: `TensorFlow.js webgpu failed: ${reason(error)}` };
  }
}
