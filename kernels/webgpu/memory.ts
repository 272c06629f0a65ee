/**
 * Storage memory of the WebGPU backend: allocation from the buffer pool, uploads ordered with
 * recorded work, readback through mappable staging buffers, release, and the ownership, size and
 * dtype checks every op runs on its inputs.
 */

import type { DType, HostArray, Storage } from "../backend.ts";
import type { CommandRecorder } from "./commands.ts";
import { BufferPool, ELEMENT_BYTES, GpuStorage } from "./pool.ts";

export class GpuMemory {
  live = 0;
  readonly #maxBindingBytes: number;
  readonly #pool: BufferPool;
  readonly #readbackPool: BufferPool;

  constructor(
    device: GPUDevice,
    limits: GPUSupportedLimits,
    private readonly recorder: CommandRecorder,
    /** Throws when the backend is disposed or its device is lost. */
    private readonly checkUsable: () => void,
  ) {
    this.#maxBindingBytes = limits.maxStorageBufferBindingSize;
    this.#pool = new BufferPool(
      device,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize),
      "moelab storage",
    );
    this.#readbackPool = new BufferPool(
      device,
      GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      limits.maxBufferSize,
      "moelab readback",
    );
  }

  get buffersCreated(): number {
    return this.#pool.buffersCreated + this.#readbackPool.buffersCreated;
  }

  /** Allocates a storage without initialising it; the caller poisons it when asked to. */
  alloc(op: string, size: number, dtype: DType): GpuStorage {
    this.checkUsable();
    if (!Number.isInteger(size) || size < 0) {
      throw new Error(`${op}: size is ${size} but must be a non-negative integer`);
    }
    if (dtype !== "f32" && dtype !== "i32") {
      throw new Error(`${op}: dtype ${String(dtype)} is invalid; use "f32" or "i32"`);
    }
    const bytes = size * ELEMENT_BYTES;
    if (bytes > this.#maxBindingBytes) {
      throw new Error(
        `${op}: a storage of ${size} ${dtype} elements needs ${bytes} bytes, over this device's ` +
          `maxStorageBufferBindingSize of ${this.#maxBindingBytes} bytes; split the tensor or ` +
          `shrink the batch, model or vocabulary`,
      );
    }

    const storage = new GpuStorage(this, size, dtype, this.#pool.acquire(bytes));
    this.live++;
    return storage;
  }

  upload(data: HostArray, dtype: DType): GpuStorage {
    let values: Float32Array | Int32Array;
    if (dtype === "i32") {
      if (!(data instanceof Int32Array)) {
        throw new Error(`upload: i32 data must be an Int32Array, got ${data.constructor.name}`);
      }
      values = data;
    } else if (dtype === "f32") {
      if (!(data instanceof Float32Array || data instanceof Float64Array)) {
        throw new Error(
          `upload: f32 data must be a Float32Array or Float64Array, got ${data.constructor.name}`,
        );
      }
      values = data instanceof Float32Array ? data : Float32Array.from(data);
    } else {
      throw new Error(`upload: dtype ${String(dtype)} is invalid; use "f32" or "i32"`);
    }

    const storage = this.alloc("upload", data.length, dtype);
    this.recorder.upload(storage.buffer!, values);
    return storage;
  }

  /** Submits pending work plus a copy into a staging buffer, maps it and copies the data out. */
  async read(storage: Storage): Promise<HostArray> {
    const own = this.own("read", "storage", storage);
    if (own.size === 0) return own.dtype === "i32" ? new Int32Array(0) : new Float32Array(0);

    const bytes = own.bytes;
    const staging = this.#readbackPool.acquire(bytes);
    this.recorder.submitReadback(own.buffer!, staging, bytes);
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, bytes);
    } catch (error) {
      this.checkUsable();
      throw error;
    }
    const copy = new ArrayBuffer(bytes);
    new Uint8Array(copy).set(new Uint8Array(staging.getMappedRange(0, bytes)));
    staging.unmap();
    this.#readbackPool.release(staging);
    return own.dtype === "i32" ? new Int32Array(copy) : new Float32Array(copy);
  }

  release(storage: Storage): void {
    const own = this.own("release", "storage", storage);
    this.#pool.release(own.buffer!);
    own.buffer = null;
    this.live--;
  }

  /** Returns the storage as a live `GpuStorage` of this memory, or throws naming the op. */
  own(op: string, name: string, storage: Storage): GpuStorage {
    this.checkUsable();
    if (!(storage instanceof GpuStorage) || storage.owner !== this) {
      throw new Error(
        `${op}: ${name} belongs to another backend; upload its data to this webgpu backend first`,
      );
    }
    if (storage.buffer === null) {
      throw new Error(`${op}: ${name} (${storage.size} × ${storage.dtype}) was already released`);
    }
    return storage;
  }

  /** Like `own`, and checks the dtype (unless "any") and the element count. */
  input(op: string, name: string, storage: Storage, size: number, dtype: DType | "any") {
    const own = this.own(op, name, storage);
    if (dtype !== "any" && own.dtype !== dtype) {
      throw new Error(`${op}: ${name} has dtype ${own.dtype} but must be ${dtype}`);
    }
    if (own.size !== size) {
      throw new Error(`${op}: ${name} has ${own.size} elements but the sizes given imply ${size}`);
    }
    return own;
  }

  /** Destroys every buffer, which also unmaps any still mapped. */
  destroy(): void {
    this.#pool.destroy();
    this.#readbackPool.destroy();
  }
}
