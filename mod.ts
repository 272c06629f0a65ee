/**
 * moelab: a research harness for transformers and mixture-of-experts models on WebGPU.
 *
 * ```ts
 * import { createCpuBackend, DecoderLM, Rng, Tensor } from "./mod.ts";
 * const backend = createCpuBackend();
 * const model = new DecoderLM(backend, new Rng(0), { ... });
 * ```
 */

export type {
  AdamWSpec,
  AxisCopySpec,
  Backend,
  BinaryOp,
  DType,
  HostArray,
  MatmulSpec,
  ReduceOp,
  Storage,
  UnaryOp,
} from "./kernels/backend.ts";
export { BackendUnavailableError } from "./kernels/backend.ts";
export { createCpuBackend } from "./kernels/cpu/backend.ts";
export { createWebGpuBackend } from "./kernels/webgpu/backend.ts";

export * from "./tensor/mod.ts";

export { Module } from "./layers/module.ts";
export { Embedding, Linear } from "./layers/linear.ts";
export { LayerNorm, RMSNorm } from "./layers/norm.ts";
export { Mlp } from "./layers/mlp.ts";
export { RopeTables } from "./layers/rope.ts";
export { CausalSelfAttention } from "./layers/attention/mha.ts";
export { DecoderBlock } from "./layers/block.ts";
export { DecoderLM } from "./layers/models/decoder_lm.ts";

export { AdamW } from "./optim/adamw.ts";
export { globalGradNorm, zeroGrad } from "./optim/clip.ts";
export { learningRate } from "./optim/schedule.ts";

export { configHash, loadConfig, parseConfig } from "./experiments/config.ts";
export { train } from "./experiments/trainer.ts";

export {
  attention,
  optimizers,
  Registry,
  routers,
  schedules,
  tasks,
} from "./experiments/registry.ts";
