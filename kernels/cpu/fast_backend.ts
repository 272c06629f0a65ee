/**
 * The fast CPU backend: the float32 reference backend with its hot ops replaced by a WebAssembly
 * SIMD matmul (large products shared with one worker thread), a WebAssembly SIMD exp under GELU,
 * softmax and cross-entropy, a WebAssembly SIMD AdamW, and tighter float32 loops (scale,
 * broadcast binary ops, transpose). Float32 storages live in one WebAssembly memory, so the
 * WebAssembly kernels work on them in place.
 * It is the engine for training without a GPU; the float64 reference backend stays the oracle
 * that tests compare it against. Ops and cases without a fast path run the reference code, so
 * errors and edge cases behave the same.
 *
 * ```ts
 * const backend = createFastCpuBackend();
 * ```
 */

import type { AdamWSpec, BinaryOp, MatmulSpec, Storage, UnaryOp } from "../backend.ts";
import { CpuBackend } from "./backend.ts";
import { checkShape } from "./broadcast.ts";
import { checkAdamWSpec } from "./optimizer.ts";
import {
  binaryRepeating,
  rmsNorm,
  rmsNormBackward,
  scale,
  softmaxBackward,
  swapAxes,
} from "./fast_ops.ts";
import { checkNormSizes } from "./norms.ts";
import { checkCount, CpuMemory, product } from "./storage.ts";
import { WasmAdamW } from "./wasm/adamw.ts";
import { WasmExp } from "./wasm/exp.ts";
import { WasmGemm } from "./wasm/gemm.ts";
import { WasmHeap } from "./wasm/heap.ts";
import { WasmTranspose } from "./wasm/transpose.ts";

export interface FastCpuBackendOptions {
  /** Fill new storages with NaN (ints with −2³¹), so an op that skips an element is caught. */
  poison?: boolean;
  /**
   * Threads that share each large matmul: 2 adds one worker, and 1 keeps every op on the calling
   * thread. Default: 2 when the machine reports at least 2 logical processors.
   */
  matmulThreads?: 1 | 2;
  /**
   * Maximum 64 KiB pages of the WebAssembly memory for storages and kernel scratch, default 65536
   * (4 GiB). Storages take up to three quarters of it. Past that they are ordinary arrays, which
   * the kernels copy in and out.
   */
  heapPages?: number;
}

/** Creates the fast float32 CPU backend; compiling its kernels takes a few milliseconds. */
export function createFastCpuBackend(options: FastCpuBackendOptions = {}): FastCpuBackend {
  const heap = WasmHeap.create({ maximumPages: options.heapPages });
  return new FastCpuBackend(
    new CpuMemory("f32", options.poison ?? false, heap.storageBlocks()),
    heap,
    WasmGemm.create(heap, { threads: options.matmulThreads }),
    WasmExp.create(heap),
    WasmAdamW.create(heap),
    WasmTranspose.create(heap),
  );
}

export class FastCpuBackend extends CpuBackend {
  override readonly description: string;

  constructor(
    mem: CpuMemory,
    private readonly heap: WasmHeap,
    private readonly gemm: WasmGemm,
    private readonly exp: WasmExp,
    private readonly adamwKernel: WasmAdamW,
    private readonly transposeKernel: WasmTranspose,
  ) {
    super(mem);
    const simd = gemm.fma ? "WebAssembly SIMD with relaxed FMA" : "WebAssembly SIMD";
    // "up to": the worker starts on the first large product and may fail to start (a warning).
    const threads = gemm.threads === 2 ? ", matmul on up to 2 threads" : "";
    this.description = `cpu (${simd}, float32${threads})`;
  }

  /**
   * Bytes of the WebAssembly memory that contains the storages. Released blocks are reused, so in
   * training this stops growing after the first steps.
   */
  get heapBytes(): number {
    return this.heap.byteLength;
  }

  override async dispose(): Promise<void> {
    this.gemm.dispose();
    await super.dispose();
  }

  override matmul(a: Storage, b: Storage, spec: MatmulSpec): Storage {
    const op = "matmul";
    const { batch, m, n, k, aBatched, bBatched } = spec;
    checkCount(op, "batch", batch);
    checkCount(op, "m", m);
    checkCount(op, "n", n);
    checkCount(op, "k", k);
    const ad = this.mem.floats(op, "a", a, (aBatched ? batch : 1) * m * k) as Float32Array;
    const bd = this.mem.floats(op, "b", b, (bBatched ? batch : 1) * k * n) as Float32Array;

    const out = this.mem.allocFloatForWrite(batch * m * n);
    this.gemm.matmul(ad, bd, out.data as Float32Array, spec);
    return out;
  }

  override unary(op: UnaryOp, x: Storage, param?: number): Storage {
    if (op !== "gelu" && !(op === "scale" && Number.isFinite(param))) {
      return super.unary(op, x, param);
    }
    const xd = this.mem.floats(`unary ${op}`, "x", x, x.size) as Float32Array;
    const out = this.mem.allocFloatForWrite(xd.length);
    if (op === "gelu") this.exp.gelu(xd, out.data as Float32Array);
    else scale(xd, param as number, out.data as Float32Array);
    return out;
  }

  override unaryBackward(op: UnaryOp, x: Storage, dy: Storage, param?: number): Storage {
    if (op !== "gelu" && !(op === "scale" && Number.isFinite(param))) {
      return super.unaryBackward(op, x, dy, param);
    }
    const name = `unaryBackward ${op}`;
    const xd = this.mem.floats(name, "x", x, x.size) as Float32Array;
    const dyd = this.mem.floats(name, "dy", dy, xd.length) as Float32Array;
    const out = this.mem.allocFloatForWrite(xd.length);
    // d(param·x)/dx is param, so the backward of scale is scale of dy.
    if (op === "gelu") this.exp.geluBackward(xd, dyd, out.data as Float32Array);
    else scale(dyd, param as number, out.data as Float32Array);
    return out;
  }

  override softmax(x: Storage, rows: number, cols: number, causalQueries: number): Storage {
    const counts = [rows, cols, causalQueries];
    const valid = counts.every((count) => Number.isInteger(count) && count >= 0) &&
      (causalQueries === 0 || rows % causalQueries === 0);
    if (!valid) return super.softmax(x, rows, cols, causalQueries);

    const xd = this.mem.floats("softmax", "x", x, rows * cols) as Float32Array;
    const out = this.mem.allocFloatForWrite(rows * cols);
    this.exp.softmax(xd, out.data as Float32Array, rows, cols, causalQueries);
    return out;
  }

  override softmaxBackward(y: Storage, dy: Storage, rows: number, cols: number): Storage {
    if (!isCount(rows) || !isCount(cols)) return super.softmaxBackward(y, dy, rows, cols);
    const op = "softmaxBackward";
    const yd = this.mem.floats(op, "y", y, rows * cols) as Float32Array;
    const dyd = this.mem.floats(op, "dy", dy, rows * cols) as Float32Array;
    const out = this.mem.allocFloatForWrite(rows * cols);
    softmaxBackward(yd, dyd, out.data as Float32Array, rows, cols);
    return out;
  }

  override crossEntropy(
    logits: Storage,
    targets: Storage,
    rows: number,
    cols: number,
    ignoreIndex: number,
  ): { loss: Storage; lse: Storage; count: Storage } {
    // Invalid sizes or targets take the reference path, which raises the same errors.
    const op = "crossEntropy";
    if (!isCount(rows) || !isCount(cols)) {
      return super.crossEntropy(logits, targets, rows, cols, ignoreIndex);
    }
    const xd = this.mem.floats(op, "logits", logits, rows * cols) as Float32Array;
    const td = this.mem.ints(op, "targets", targets, rows);
    if (!targetsValid(td, cols, ignoreIndex)) {
      return super.crossEntropy(logits, targets, rows, cols, ignoreIndex);
    }

    const lse = this.mem.allocFloatForWrite(rows);
    const { lossSum, counted } = this.exp.crossEntropy(
      xd,
      td,
      lse.data as Float32Array,
      rows,
      cols,
      ignoreIndex,
    );
    const loss = this.mem.allocFloat(1);
    loss.data[0] = counted > 0 ? lossSum / counted : 0;
    const count = this.mem.allocFloat(1);
    count.data[0] = counted;
    return { loss, lse, count };
  }

  override crossEntropyBackward(
    logits: Storage,
    targets: Storage,
    lse: Storage,
    count: Storage,
    dy: Storage,
    rows: number,
    cols: number,
    ignoreIndex: number,
  ): Storage {
    const op = "crossEntropyBackward";
    const reference = () =>
      super.crossEntropyBackward(logits, targets, lse, count, dy, rows, cols, ignoreIndex);
    if (!isCount(rows) || !isCount(cols)) return reference();
    const xd = this.mem.floats(op, "logits", logits, rows * cols) as Float32Array;
    const td = this.mem.ints(op, "targets", targets, rows);
    const lsed = this.mem.floats(op, "lse", lse, rows) as Float32Array;
    const countd = this.mem.floats(op, "count", count, 1);
    const dyd = this.mem.floats(op, "dy", dy, 1);
    if (!targetsValid(td, cols, ignoreIndex)) return reference();

    const out = this.mem.allocFloatForWrite(rows * cols);
    const scaleFactor = dyd[0] / Math.max(countd[0], 1);
    this.exp.crossEntropyBackward(
      xd,
      td,
      lsed,
      scaleFactor,
      out.data as Float32Array,
      rows,
      cols,
      ignoreIndex,
    );
    return out;
  }

  override rmsNorm(
    x: Storage,
    gamma: Storage,
    rows: number,
    cols: number,
    eps: number,
  ): { y: Storage; rstd: Storage } {
    const op = "rmsNorm";
    checkNormSizes(op, rows, cols, eps);
    const xd = this.mem.floats(op, "x", x, rows * cols) as Float32Array;
    const gd = this.mem.floats(op, "gamma", gamma, cols) as Float32Array;

    const y = this.mem.allocFloatForWrite(rows * cols);
    const rstd = this.mem.allocFloatForWrite(rows);
    rmsNorm(xd, gd, y.data as Float32Array, rstd.data as Float32Array, cols, eps);
    return { y, rstd };
  }

  override rmsNormBackward(
    x: Storage,
    gamma: Storage,
    rstd: Storage,
    dy: Storage,
    rows: number,
    cols: number,
  ): { dx: Storage; dgamma: Storage } {
    const op = "rmsNormBackward";
    checkNormSizes(op, rows, cols);
    const xd = this.mem.floats(op, "x", x, rows * cols) as Float32Array;
    const gd = this.mem.floats(op, "gamma", gamma, cols) as Float32Array;
    const rstdd = this.mem.floats(op, "rstd", rstd, rows) as Float32Array;
    const dyd = this.mem.floats(op, "dy", dy, rows * cols) as Float32Array;

    const dx = this.mem.allocFloatForWrite(rows * cols);
    const dgamma = this.mem.allocFloatForWrite(cols);
    const [dxd, dgd] = [dx.data as Float32Array, dgamma.data as Float32Array];
    rmsNormBackward(xd, gd, rstdd, dyd, dxd, dgd, cols);
    return { dx, dgamma };
  }

  override adamw(
    param: Storage,
    grad: Storage,
    m: Storage,
    v: Storage,
    gradScale: Storage | null,
    spec: AdamWSpec,
  ): void {
    const op = "adamw";
    checkAdamWSpec(op, spec);
    const pd = this.mem.floats(op, "param", param, param.size) as Float32Array;
    const gd = this.mem.floats(op, "grad", grad, pd.length) as Float32Array;
    const md = this.mem.floats(op, "m", m, pd.length) as Float32Array;
    const vd = this.mem.floats(op, "v", v, pd.length) as Float32Array;
    const scale = gradScale === null ? 1 : this.mem.floats(op, "gradScale", gradScale, 1)[0];
    if (!this.adamwKernel.step(pd, gd, md, vd, scale, spec)) {
      super.adamw(param, grad, m, v, gradScale, spec);
    }
  }

  override binary(
    op: BinaryOp,
    a: Storage,
    aShape: readonly number[],
    b: Storage,
    bShape: readonly number[],
    outShape: readonly number[],
  ): Storage {
    const commutes = op === "add" || op === "mul";
    const fast = sameShape(aShape, outShape) && repeatsAlongLeadingAxes(bShape, outShape);
    const swapped = !fast && commutes && sameShape(bShape, outShape) &&
      repeatsAlongLeadingAxes(aShape, outShape);
    if (!fast && !swapped) return super.binary(op, a, aShape, b, bShape, outShape);

    checkShape("binary", "outShape", outShape);
    const ad = this.mem.floats("binary", "a", a, product(aShape)) as Float32Array;
    const bd = this.mem.floats("binary", "b", b, product(bShape)) as Float32Array;
    const out = this.mem.allocFloatForWrite(product(outShape));
    if (out.size > 0) {
      if (fast) binaryRepeating(op, ad, bd, out.data as Float32Array);
      else binaryRepeating(op, bd, ad, out.data as Float32Array);
    }
    return out;
  }

  override transpose(x: Storage, shape: readonly number[], axis1: number, axis2: number): Storage {
    const isAxis = (axis: number) => Number.isInteger(axis) && axis >= 0 && axis < shape.length;
    if (!isAxis(axis1) || !isAxis(axis2)) return super.transpose(x, shape, axis1, axis2);
    checkShape("transpose", "shape", shape);
    const xd = this.mem.anyDtype("transpose", "x", x, product(shape));

    const out = x.dtype === "i32"
      ? this.mem.allocInt(xd.length)
      : this.mem.allocFloatForWrite(xd.length);
    if (axis1 === axis2) out.data.set(xd);
    else if (
      !(xd instanceof Float32Array && out.data instanceof Float32Array &&
        this.transposeKernel.swapAxes(xd, out.data, shape, axis1, axis2))
    ) {
      swapAxes(xd, out.data, shape, axis1, axis2);
    }
    return out;
  }
}

function isCount(value: number): boolean {
  return Number.isInteger(value) && value >= 0;
}

/** True when every target is ignoreIndex or a class in [0, cols). */
function targetsValid(targets: Int32Array, cols: number, ignoreIndex: number): boolean {
  for (const target of targets) {
    if (target !== ignoreIndex && (target < 0 || target >= cols)) return false;
  }
  return true;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, axis) => d === b[axis]);
}

/**
 * True when `shape` (of the rank of `outShape`) is 1 along some leading axes and equal to
 * `outShape` along the rest, so its elements repeat every product(shape) elements of the output.
 */
function repeatsAlongLeadingAxes(shape: readonly number[], outShape: readonly number[]): boolean {
  if (shape.length !== outShape.length) return false;
  let axis = 0;
  while (axis < shape.length && shape[axis] === 1) axis++;
  for (; axis < shape.length; axis++) if (shape[axis] !== outShape[axis]) return false;
  return product(shape) > 0;
}
