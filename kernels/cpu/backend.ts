/**
 * The CPU reference backend: every `Backend` op as a plain TypeScript loop.
 *
 * It is the oracle that kernel tests compare the WebGPU backend against, and in float64 it is
 * the engine for gradient checks. Each op validates its sizes before it runs, accumulates in
 * float64 and stores its results in the backend's precision, so in "f32" mode every op's output
 * is rounded to float32 as on the GPU.
 *
 * ```ts
 * const backend = createCpuBackend({ precision: "f64", poison: true });
 * ```
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
import * as attention from "./attention.ts";
import { binary, sumToShape } from "./broadcast.ts";
import { crossEntropy, crossEntropyBackward } from "./cross_entropy.ts";
import { gather, scatterAdd } from "./indexing.ts";
import { copyAxis, fill, transpose } from "./layout.ts";
import { matmul } from "./matmul.ts";
import * as moe from "./moe.ts";
import { layerNorm, layerNormBackward, rmsNorm, rmsNormBackward } from "./norms.ts";
import { adamw, clipCoefficient, muonMomentum, sumSquares } from "./optimizer.ts";
import { maxBackward, reduce } from "./reduce.ts";
import { rope } from "./rope.ts";
import { softmax, softmaxBackward } from "./softmax.ts";
import { CpuMemory } from "./storage.ts";
import { unary, unaryBackward } from "./unary.ts";

export interface CpuBackendOptions {
  /**
   * Storage precision of float data: "f32" (the default) rounds every output like the GPU, and
   * "f64" serves gradient checks.
   */
  precision?: "f32" | "f64";
  /** Fill new storages with NaN (ints with −2³¹), so an op that skips an element is caught. */
  poison?: boolean;
}

/** Creates a CPU backend; see `CpuBackendOptions` for the defaults. */
export function createCpuBackend(options: CpuBackendOptions = {}): Backend {
  const precision = options.precision ?? "f32";
  if (precision !== "f32" && precision !== "f64") {
    throw new Error(`createCpuBackend: precision is ${String(precision)}; use "f32" or "f64"`);
  }
  return new CpuBackend(new CpuMemory(precision, options.poison ?? false));
}

/** The reference backend; `FastCpuBackend` extends it and overrides the hot ops. */
export class CpuBackend implements Backend {
  readonly name = "cpu";
  readonly description: string;
  readonly precision: "f32" | "f64";

  constructor(protected readonly mem: CpuMemory) {
    this.precision = mem.precision;
    const width = mem.precision === "f64" ? "float64" : "float32";
    this.description = `cpu (TypeScript reference, ${width})`;
  }

  // --- memory ----------------------------------------------------------------------------------

  alloc(size: number, dtype: DType): Storage {
    return this.mem.alloc(size, dtype);
  }

  upload(data: HostArray, dtype: DType): Storage {
    return this.mem.upload(data, dtype);
  }

  /** Copies the data at call time; an invalid storage gives a rejected promise. */
  read(storage: Storage): Promise<HostArray> {
    try {
      return Promise.resolve(this.mem.whole("read", "storage", storage).slice());
    } catch (error) {
      return Promise.reject(error);
    }
  }

  release(storage: Storage): void {
    this.mem.release(storage);
  }

  liveStorages(): number {
    return this.mem.liveCount;
  }

  /** Does nothing: every op has finished by the time it returns. */
  flush(): void {}

  dispose(): Promise<void> {
    this.mem.dispose();
    return Promise.resolve();
  }

  // --- elementwise -----------------------------------------------------------------------------

  unary(op: UnaryOp, x: Storage, param?: number): Storage {
    return unary(this.mem, op, x, param);
  }

  unaryBackward(op: UnaryOp, x: Storage, dy: Storage, param?: number): Storage {
    return unaryBackward(this.mem, op, x, dy, param);
  }

  binary(
    op: BinaryOp,
    a: Storage,
    aShape: readonly number[],
    b: Storage,
    bShape: readonly number[],
    outShape: readonly number[],
  ): Storage {
    return binary(this.mem, op, a, aShape, b, bShape, outShape);
  }

  sumToShape(x: Storage, shape: readonly number[], outShape: readonly number[]): Storage {
    return sumToShape(this.mem, x, shape, outShape);
  }

  // --- reductions ------------------------------------------------------------------------------

  reduce(op: ReduceOp, x: Storage, outer: number, n: number, inner: number): Storage {
    return reduce(this.mem, op, x, outer, n, inner);
  }

  maxBackward(x: Storage, dy: Storage, outer: number, n: number, inner: number): Storage {
    return maxBackward(this.mem, x, dy, outer, n, inner);
  }

  // --- linear algebra --------------------------------------------------------------------------

  matmul(a: Storage, b: Storage, spec: MatmulSpec): Storage {
    return matmul(this.mem, a, b, spec);
  }

  // --- normalisation and softmax ---------------------------------------------------------------

  softmax(x: Storage, rows: number, cols: number, causalQueries: number): Storage {
    return softmax(this.mem, x, rows, cols, causalQueries);
  }

  softmaxBackward(y: Storage, dy: Storage, rows: number, cols: number): Storage {
    return softmaxBackward(this.mem, y, dy, rows, cols);
  }

  layerNorm(
    x: Storage,
    gamma: Storage,
    beta: Storage,
    rows: number,
    cols: number,
    eps: number,
  ): { y: Storage; mean: Storage; rstd: Storage } {
    return layerNorm(this.mem, x, gamma, beta, rows, cols, eps);
  }

  layerNormBackward(
    x: Storage,
    gamma: Storage,
    mean: Storage,
    rstd: Storage,
    dy: Storage,
    rows: number,
    cols: number,
  ): { dx: Storage; dgamma: Storage; dbeta: Storage } {
    return layerNormBackward(this.mem, x, gamma, mean, rstd, dy, rows, cols);
  }

  rmsNorm(
    x: Storage,
    gamma: Storage,
    rows: number,
    cols: number,
    eps: number,
  ): { y: Storage; rstd: Storage } {
    return rmsNorm(this.mem, x, gamma, rows, cols, eps);
  }

  rmsNormBackward(
    x: Storage,
    gamma: Storage,
    rstd: Storage,
    dy: Storage,
    rows: number,
    cols: number,
  ): { dx: Storage; dgamma: Storage } {
    return rmsNormBackward(this.mem, x, gamma, rstd, dy, rows, cols);
  }

  // --- indexing --------------------------------------------------------------------------------

  gather(table: Storage, ids: Storage, n: number, vocab: number, dim: number): Storage {
    return gather(this.mem, table, ids, n, vocab, dim);
  }

  scatterAdd(dy: Storage, ids: Storage, n: number, vocab: number, dim: number): Storage {
    return scatterAdd(this.mem, dy, ids, n, vocab, dim);
  }

  // --- mixture of experts ----------------------------------------------------------------------

  topK(scores: Storage, rows: number, cols: number, k: number) {
    return moe.topK(this.mem, scores, rows, cols, k);
  }

  gatherColumns(x: Storage, indices: Storage, rows: number, cols: number, k: number): Storage {
    return moe.gatherColumns(this.mem, x, indices, rows, cols, k);
  }

  scatterColumns(dy: Storage, indices: Storage, rows: number, cols: number, k: number): Storage {
    return moe.scatterColumns(this.mem, dy, indices, rows, cols, k);
  }

  gatherRows(x: Storage, index: Storage, n: number, m: number, cols: number): Storage {
    return moe.gatherRows(this.mem, x, index, n, m, cols);
  }

  scatterAddRows(dy: Storage, index: Storage, m: number, n: number, cols: number): Storage {
    return moe.scatterAddRows(this.mem, dy, index, m, n, cols);
  }

  dropOverCapacity(
    experts: Storage,
    priority: Storage | null,
    count: number,
    numExperts: number,
    capacity: number,
  ): Storage {
    return moe.dropOverCapacity(this.mem, experts, priority, count, numExperts, capacity);
  }

  sortByExpert(experts: Storage, count: number, numExperts: number) {
    return moe.sortByExpert(this.mem, experts, count, numExperts);
  }

  groupedMatmul(
    x: Storage,
    w: Storage,
    offsets: Storage,
    rows: number,
    numExperts: number,
    dIn: number,
    dOut: number,
  ): Storage {
    return moe.groupedMatmul(this.mem, x, w, offsets, rows, numExperts, dIn, dOut);
  }

  groupedMatmulWeightGrad(
    dy: Storage,
    x: Storage,
    offsets: Storage,
    rows: number,
    numExperts: number,
    dIn: number,
    dOut: number,
  ): Storage {
    return moe.groupedMatmulWeightGrad(this.mem, dy, x, offsets, rows, numExperts, dIn, dOut);
  }

  // --- layout ----------------------------------------------------------------------------------

  transpose(x: Storage, shape: readonly number[], axis1: number, axis2: number): Storage {
    return transpose(this.mem, x, shape, axis1, axis2);
  }

  copyAxis(src: Storage, dst: Storage, spec: AxisCopySpec): void {
    copyAxis(this.mem, src, dst, spec);
  }

  fill(dst: Storage, value: number): void {
    fill(this.mem, dst, value);
  }

  // --- model-specific fused ops ----------------------------------------------------------------

  rope(
    x: Storage,
    cos: Storage,
    sin: Storage,
    outer: number,
    seqLen: number,
    dim: number,
    inverse: boolean,
  ): Storage {
    return rope(this.mem, x, cos, sin, outer, seqLen, dim, inverse);
  }

  crossEntropy(
    logits: Storage,
    targets: Storage,
    rows: number,
    cols: number,
    ignoreIndex: number,
  ): { loss: Storage; lse: Storage; count: Storage } {
    return crossEntropy(this.mem, logits, targets, rows, cols, ignoreIndex);
  }

  crossEntropyBackward(
    logits: Storage,
    targets: Storage,
    lse: Storage,
    count: Storage,
    dy: Storage,
    rows: number,
    cols: number,
    ignoreIndex: number,
  ): Storage {
    return crossEntropyBackward(this.mem, logits, targets, lse, count, dy, rows, cols, ignoreIndex);
  }

  // --- attention -------------------------------------------------------------------------------

  attention(inputs: AttentionInputs, spec: AttentionSpec): { out: Storage; lse: Storage } {
    return attention.attention(this.mem, inputs, spec);
  }

  attentionBackward(
    inputs: AttentionInputs,
    out: Storage,
    lse: Storage,
    dout: Storage,
    spec: AttentionSpec,
  ): AttentionGrads {
    return attention.attentionBackward(this.mem, inputs, out, lse, dout, spec);
  }

  attentionProbs(inputs: AttentionInputs, spec: AttentionSpec): Storage {
    return attention.attentionProbs(this.mem, inputs, spec);
  }

  attentionKeepEnds(scores: Storage, rows: number, seqLen: number, keep: number): Storage {
    return attention.attentionKeepEnds(this.mem, scores, rows, seqLen, keep);
  }

  // --- optimizer -------------------------------------------------------------------------------

  sumSquares(x: Storage): Storage {
    return sumSquares(this.mem, x);
  }

  clipCoefficient(normSq: Storage, maxNorm: number): Storage {
    return clipCoefficient(this.mem, normSq, maxNorm);
  }

  muonMomentum(
    m: Storage,
    grad: Storage,
    gradScale: Storage | null,
    momentum: number,
    nesterov: boolean,
  ): Storage {
    return muonMomentum(this.mem, m, grad, gradScale, momentum, nesterov);
  }

  adamw(
    param: Storage,
    grad: Storage,
    m: Storage,
    v: Storage,
    gradScale: Storage | null,
    spec: AdamWSpec,
  ): void {
    adamw(this.mem, param, grad, m, v, gradScale, spec);
  }
}
