/**
 * The WebGPU backend: moelab's `Backend` on Deno's native `navigator.gpu`.
 *
 * Ops record compute dispatches into one pending command encoder (see `commands.ts`); nothing is
 * submitted until `flush` or `read`. Storages live in a size-bucketed buffer pool, pipelines are
 * cached by WGSL text, and per-dispatch parameters share one uniform buffer. All float math runs
 * in float32; the WGSL for each op family lives in `ops/`.
 *
 * Usage: `const backend = await createWebGpuBackend(); ...; await backend.dispose();`
 */

import type {
  AdamWSpec,
  AttentionGrads,
  AttentionInputs,
  AttentionSpec,
  AxisCopySpec,
  Backend,
  BinaryOp,
  DType,
  HostArray,
  MatmulSpec,
  ReduceOp,
  Storage,
  UnaryOp,
} from "../backend.ts";
import { CommandRecorder } from "./commands.ts";
import { type AcquiredDevice, acquireDevice } from "./device.ts";
import { PipelineCache } from "./pipelines.ts";
import { GpuMemory } from "./memory.ts";
import type { GpuStorage } from "./pool.ts";
import { UniformArena } from "./uniforms.ts";
import type { Grid, Kernel, KernelContext } from "./ops/kernel.ts";
import * as attention from "./ops/attention.ts";
import * as elementwise from "./ops/elementwise.ts";
import * as indexing from "./ops/indexing.ts";
import * as layout from "./ops/layout.ts";
import { matmul } from "./ops/matmul.ts";
import * as moe from "./ops/moe.ts";
import * as norms from "./ops/norms.ts";
import * as optimizer from "./ops/optimizer.ts";
import * as reduce from "./ops/reduce.ts";
import * as rows from "./ops/rows.ts";

export interface WebGpuBackendOptions {
  /** Fill every new output with NaN (floats) or -2³¹ (ints) so unwritten elements show up. */
  poison?: boolean;
  powerPreference?: GPUPowerPreference;
}

/** Work counters since creation; a steady training step should add no `buffersCreated`. */
export interface WebGpuStats {
  buffersCreated: number;
  submits: number;
  dispatches: number;
  /** Bind groups cached for reuse by later dispatches. */
  bindGroupsCached: number;
}

/** Uniform slots per batch; a batch with more dispatches is submitted early. */
const UNIFORM_SLOTS = 4096;

/** The bit patterns written by poisoning: a quiet NaN and the most negative int32. */
const FLOAT_POISON_BITS = 0x7fc00000;
const INT_POISON_BITS = 0x80000000;

/** Creates the WebGPU backend, or throws `BackendUnavailableError` when WebGPU has no adapter. */
export async function createWebGpuBackend(
  options: WebGpuBackendOptions = {},
): Promise<WebGpuBackend> {
  const acquired = await acquireDevice({ powerPreference: options.powerPreference });
  return new WebGpuBackend(acquired, options.poison ?? false);
}

export class WebGpuBackend implements Backend {
  readonly name = "webgpu";
  readonly precision = "f32";
  readonly description: string;

  readonly #device: GPUDevice;
  readonly #poison: boolean;
  readonly #memory: GpuMemory;
  readonly #uniforms: UniformArena;
  readonly #pipelines: PipelineCache;
  readonly #recorder: CommandRecorder;
  readonly #context: KernelContext;
  #lostReason: string | null = null;
  #gpuError: string | null = null;
  #disposed = false;

  constructor(acquired: AcquiredDevice, poison: boolean) {
    const { device, limits } = acquired;
    this.#device = device;
    this.description = acquired.description;
    this.#poison = poison;
    this.#uniforms = new UniformArena(
      device,
      limits.minUniformBufferOffsetAlignment,
      UNIFORM_SLOTS,
    );
    this.#pipelines = new PipelineCache(device);
    this.#recorder = new CommandRecorder(device, this.#uniforms, this.#pipelines);
    this.#memory = new GpuMemory(device, limits, this.#recorder, () => this.#checkUsable());

    device.lost.then((info) => {
      if (!this.#disposed) this.#lostReason = info.message || info.reason || "unknown reason";
    });
    device.addEventListener("uncapturederror", (event) => {
      this.#gpuError ??= (event as GPUUncapturedErrorEvent).error.message;
    });

    this.#context = {
      output: (size, dtype) => this.alloc(size, dtype),
      input: (op, name, storage, size, dtype) => this.#memory.input(op, name, storage, size, dtype),
      dispatch: (kernel, storages, params, grid) => this.#dispatch(kernel, storages, params, grid),
      release: (storage) => this.release(storage),
    };
  }

  // --- memory --------------------------------------------------------------------------------

  alloc(size: number, dtype: DType): GpuStorage {
    const storage = this.#memory.alloc("alloc", size, dtype);
    if (this.#poison) {
      layout.fillBits(
        this.#context,
        storage,
        dtype === "f32" ? FLOAT_POISON_BITS : INT_POISON_BITS,
      );
    }
    return storage;
  }

  upload(data: HostArray, dtype: DType): GpuStorage {
    return this.#memory.upload(data, dtype);
  }

  /** Also rethrows a WGSL compile failure or WebGPU validation error from recorded work. */
  async read(storage: Storage): Promise<HostArray> {
    this.#memory.own("read", "storage", storage);
    await this.#pipelines.settle();
    this.#throwGpuError();
    const data = await this.#memory.read(storage);
    this.#throwGpuError();
    return data;
  }

  release(storage: Storage): void {
    this.#memory.release(storage);
  }

  liveStorages(): number {
    return this.#memory.live;
  }

  flush(): void {
    this.#checkUsable();
    this.#recorder.flush();
  }

  /** Waits for submitted work, destroys every buffer (unmapping any mapped one), then the device. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    try {
      if (this.#lostReason === null) {
        this.#recorder.flush();
        await this.#device.queue.onSubmittedWorkDone();
      }
    } finally {
      this.#disposed = true;
      this.#recorder.destroy();
      this.#memory.destroy();
      this.#uniforms.destroy();
      this.#device.destroy();
    }
  }

  /** Counters of buffer creation, submits and dispatches since the backend was created. */
  stats(): WebGpuStats {
    return {
      buffersCreated: this.#memory.buffersCreated,
      submits: this.#recorder.submits,
      dispatches: this.#recorder.dispatches,
      bindGroupsCached: this.#recorder.bindGroupsCached,
    };
  }

  /** Compiles WGSL and throws an error with line, column and the numbered source if it is invalid. */
  async compileWgsl(label: string, code: string): Promise<void> {
    this.#checkUsable();
    await this.#pipelines.compile(label, code);
  }

  // --- ops -----------------------------------------------------------------------------------

  unary(op: UnaryOp, x: Storage, param?: number): Storage {
    return elementwise.unary(this.#context, op, x, param);
  }

  unaryBackward(op: UnaryOp, x: Storage, dy: Storage, param?: number): Storage {
    return elementwise.unaryBackward(this.#context, op, x, dy, param);
  }

  binary(
    op: BinaryOp,
    a: Storage,
    aShape: readonly number[],
    b: Storage,
    bShape: readonly number[],
    outShape: readonly number[],
  ): Storage {
    return elementwise.binary(this.#context, op, a, aShape, b, bShape, outShape);
  }

  sumToShape(x: Storage, shape: readonly number[], outShape: readonly number[]): Storage {
    return reduce.sumToShape(this.#context, x, shape, outShape);
  }

  reduce(op: ReduceOp, x: Storage, outer: number, n: number, inner: number): Storage {
    return reduce.reduce(this.#context, op, x, outer, n, inner);
  }

  maxBackward(x: Storage, dy: Storage, outer: number, n: number, inner: number): Storage {
    return reduce.maxBackward(this.#context, x, dy, outer, n, inner);
  }

  matmul(a: Storage, b: Storage, spec: MatmulSpec): Storage {
    return matmul(this.#context, a, b, spec);
  }

  softmax(x: Storage, rowCount: number, cols: number, causalQueries: number): Storage {
    return rows.softmax(this.#context, x, rowCount, cols, causalQueries);
  }

  softmaxBackward(y: Storage, dy: Storage, rowCount: number, cols: number): Storage {
    return rows.softmaxBackward(this.#context, y, dy, rowCount, cols);
  }

  layerNorm(
    x: Storage,
    gamma: Storage,
    beta: Storage,
    rowCount: number,
    cols: number,
    eps: number,
  ) {
    return norms.layerNorm(this.#context, x, gamma, beta, rowCount, cols, eps);
  }

  layerNormBackward(
    x: Storage,
    gamma: Storage,
    mean: Storage,
    rstd: Storage,
    dy: Storage,
    rowCount: number,
    cols: number,
  ) {
    return norms.layerNormBackward(this.#context, x, gamma, mean, rstd, dy, rowCount, cols);
  }

  rmsNorm(x: Storage, gamma: Storage, rowCount: number, cols: number, eps: number) {
    return norms.rmsNorm(this.#context, x, gamma, rowCount, cols, eps);
  }

  rmsNormBackward(
    x: Storage,
    gamma: Storage,
    rstd: Storage,
    dy: Storage,
    rowCount: number,
    cols: number,
  ) {
    return norms.rmsNormBackward(this.#context, x, gamma, rstd, dy, rowCount, cols);
  }

  gather(table: Storage, ids: Storage, n: number, vocab: number, dim: number): Storage {
    return indexing.gather(this.#context, table, ids, n, vocab, dim);
  }

  scatterAdd(dy: Storage, ids: Storage, n: number, vocab: number, dim: number): Storage {
    return indexing.scatterAdd(this.#context, dy, ids, n, vocab, dim);
  }

  topK(scores: Storage, rowCount: number, cols: number, k: number) {
    return moe.topK(this.#context, scores, rowCount, cols, k);
  }

  gatherColumns(x: Storage, indices: Storage, rowCount: number, cols: number, k: number): Storage {
    return moe.gatherColumns(this.#context, x, indices, rowCount, cols, k);
  }

  scatterColumns(
    dy: Storage,
    indices: Storage,
    rowCount: number,
    cols: number,
    k: number,
  ): Storage {
    return moe.scatterColumns(this.#context, dy, indices, rowCount, cols, k);
  }

  gatherRows(x: Storage, index: Storage, n: number, m: number, cols: number): Storage {
    return moe.gatherRows(this.#context, x, index, n, m, cols);
  }

  scatterAddRows(dy: Storage, index: Storage, m: number, n: number, cols: number): Storage {
    return moe.scatterAddRows(this.#context, dy, index, m, n, cols);
  }

  dropOverCapacity(
    experts: Storage,
    priority: Storage | null,
    count: number,
    numExperts: number,
    capacity: number,
  ): Storage {
    return moe.dropOverCapacity(this.#context, experts, priority, count, numExperts, capacity);
  }

  sortByExpert(experts: Storage, count: number, numExperts: number) {
    return moe.sortByExpert(this.#context, experts, count, numExperts);
  }

  groupedMatmul(
    x: Storage,
    w: Storage,
    offsets: Storage,
    rowCount: number,
    numExperts: number,
    dIn: number,
    dOut: number,
  ): Storage {
    return moe.groupedMatmul(this.#context, x, w, offsets, rowCount, numExperts, dIn, dOut);
  }

  groupedMatmulWeightGrad(
    dy: Storage,
    x: Storage,
    offsets: Storage,
    rowCount: number,
    numExperts: number,
    dIn: number,
    dOut: number,
  ): Storage {
    return moe.groupedMatmulWeightGrad(
      this.#context,
      dy,
      x,
      offsets,
      rowCount,
      numExperts,
      dIn,
      dOut,
    );
  }

  transpose(x: Storage, shape: readonly number[], axis1: number, axis2: number): Storage {
    return layout.transpose(this.#context, x, shape, axis1, axis2);
  }

  copyAxis(src: Storage, dst: Storage, spec: AxisCopySpec): void {
    layout.copyAxis(this.#context, src, dst, spec);
  }

  fill(dst: Storage, value: number): void {
    layout.fill(this.#context, dst, value);
  }

  rope(
    x: Storage,
    cos: Storage,
    sin: Storage,
    outer: number,
    seqLen: number,
    dim: number,
    inverse: boolean,
  ): Storage {
    return indexing.rope(this.#context, x, cos, sin, outer, seqLen, dim, inverse);
  }

  crossEntropy(
    logits: Storage,
    targets: Storage,
    rowCount: number,
    cols: number,
    ignoreIndex: number,
  ) {
    return rows.crossEntropy(this.#context, logits, targets, rowCount, cols, ignoreIndex);
  }

  crossEntropyBackward(
    logits: Storage,
    targets: Storage,
    lse: Storage,
    count: Storage,
    dy: Storage,
    rowCount: number,
    cols: number,
    ignoreIndex: number,
  ): Storage {
    return rows.crossEntropyBackward(
      this.#context,
      { logits, targets, lse, count, dy },
      rowCount,
      cols,
      ignoreIndex,
    );
  }

  attention(inputs: AttentionInputs, spec: AttentionSpec): { out: Storage; lse: Storage } {
    return attention.attention(this.#context, inputs, spec);
  }

  attentionBackward(
    inputs: AttentionInputs,
    out: Storage,
    lse: Storage,
    dout: Storage,
    spec: AttentionSpec,
  ): AttentionGrads {
    return attention.attentionBackward(this.#context, inputs, { out, lse, dout }, spec);
  }

  attentionProbs(inputs: AttentionInputs, spec: AttentionSpec): Storage {
    return attention.attentionProbs(this.#context, inputs, spec);
  }

  attentionKeepEnds(scores: Storage, rowCount: number, seqLen: number, keep: number): Storage {
    return attention.attentionKeepEnds(this.#context, scores, rowCount, seqLen, keep);
  }

  sumSquares(x: Storage): Storage {
    return optimizer.sumSquares(this.#context, x);
  }

  clipCoefficient(normSq: Storage, maxNorm: number): Storage {
    return optimizer.clipCoefficient(this.#context, normSq, maxNorm);
  }

  muonMomentum(
    m: Storage,
    grad: Storage,
    gradScale: Storage | null,
    momentum: number,
    nesterov: boolean,
  ): Storage {
    return optimizer.muonMomentum(this.#context, { m, grad, gradScale }, momentum, nesterov);
  }

  adamw(
    param: Storage,
    grad: Storage,
    m: Storage,
    v: Storage,
    gradScale: Storage | null,
    spec: AdamWSpec,
  ): void {
    optimizer.adamw(this.#context, { param, grad, m, v, gradScale }, spec);
  }

  // --- internals -----------------------------------------------------------------------------

  #dispatch(kernel: Kernel, storages: Storage[], params: number[], grid: Grid): void {
    const bindings = storages.map((storage) => {
      const own = this.#memory.own(kernel.label, "binding", storage);
      return { buffer: own.buffer!, bytes: own.bytes };
    });
    this.#recorder.dispatch(kernel, bindings, params, grid);
  }

  #checkUsable(): void {
    if (this.#disposed) {
      throw new Error("webgpu backend was disposed; create a new backend to run more ops");
    }
    if (this.#lostReason !== null) {
      throw new Error(`GPU device lost: ${this.#lostReason}; rerun, or use --backend cpu`);
    }
  }

  #throwGpuError(): void {
    if (this.#gpuError !== null) {
      throw new Error(`WebGPU reported an error in recorded work: ${this.#gpuError}`);
    }
  }
}
