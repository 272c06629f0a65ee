/**
 * Memory of the CPU backend: storages are plain typed arrays, and every op reads its inputs
 * through `CpuMemory`, which checks ownership, release state, dtype and size before any loop runs.
 */

import type { DType, HostArray, Storage } from "../backend.ts";

export type FloatArray = Float32Array | Float64Array;
export type CpuArray = FloatArray | Int32Array;

/** Marks an element that no op wrote: NaN for floats, the most negative int32 for ints. */
const INT_POISON = -2147483648;

export class CpuStorage<A extends CpuArray = CpuArray> implements Storage {
  released = false;

  constructor(
    readonly owner: CpuMemory,
    readonly data: A,
    readonly dtype: DType,
  ) {}

  get size(): number {
    return this.data.length;
  }
}

/**
 * A source of float32 arrays for a memory, such as the fast backend's WebAssembly heap. A block
 * may contain old values, and `allocate` returns null when it has no room.
 */
export interface FloatBlocks {
  allocate(size: number): Float32Array | null;
  release(view: Float32Array): void;
  reset(): void;
}

export class CpuMemory {
  private readonly live = new Set<CpuStorage>();
  private disposed = false;
  /**
   * Returns the block of a storage that was dropped without `release` once it is garbage
   * collected. The held value is the storage's data, which does not keep the storage alive.
   */
  private readonly unreleased: FinalizationRegistry<Float32Array> | null;

  constructor(
    readonly precision: "f32" | "f64",
    readonly poison: boolean,
    private readonly blocks: FloatBlocks | null = null,
  ) {
    if (blocks !== null && precision !== "f32") {
      throw new Error(
        `cpu memory: float blocks are float32, so the precision must be f32, not ${precision}`,
      );
    }
    this.unreleased = blocks === null ? null : new FinalizationRegistry((view) => {
      if (!this.disposed) blocks.release(view);
    });
  }

  get liveCount(): number {
    return this.live.size;
  }

  /** A new float storage of `size` zeros (NaN with `poison`). */
  allocFloat(size: number): CpuStorage<FloatArray> {
    const storage = this.allocFloatForWrite(size);
    if (this.blocks !== null && !this.poison) storage.data.fill(0);
    return storage;
  }

  /**
   * Allocates a float storage for an op that writes every element. With float blocks it keeps a
   * reused block's old values instead of zeroing them, and with `poison` it is NaN as always.
   */
  allocFloatForWrite(size: number): CpuStorage<FloatArray> {
    this.checkUsable();
    checkCount("alloc", "size", size);
    const block = this.blocks?.allocate(size) ?? null;
    const data = block ??
      (this.precision === "f64" ? new Float64Array(size) : new Float32Array(size));
    if (this.poison) data.fill(NaN);
    const storage = new CpuStorage<FloatArray>(this, data, "f32");
    if (block !== null) this.unreleased?.register(storage, block, storage);
    return this.track(storage);
  }

  allocInt(size: number): CpuStorage<Int32Array> {
    this.checkUsable();
    checkCount("alloc", "size", size);
    const data = new Int32Array(size);
    if (this.poison) data.fill(INT_POISON);
    return this.track(new CpuStorage<Int32Array>(this, data, "i32"));
  }

  alloc(size: number, dtype: DType): CpuStorage {
    if (dtype === "f32") return this.allocFloat(size);
    if (dtype === "i32") return this.allocInt(size);
    throw new Error(`alloc: dtype ${String(dtype)} is invalid; use "f32" or "i32"`);
  }

  /** Copies host data into a new storage; i32 storages take only Int32Array data. */
  upload(data: HostArray, dtype: DType): CpuStorage {
    if (dtype === "i32") {
      if (!(data instanceof Int32Array)) {
        throw new Error(`upload: i32 data must be an Int32Array, got ${data.constructor.name}`);
      }
      const storage = this.allocInt(data.length);
      storage.data.set(data);
      return storage;
    }

    if (!(data instanceof Float32Array || data instanceof Float64Array)) {
      throw new Error(
        `upload: f32 data must be a Float32Array or Float64Array, got ${data.constructor.name}`,
      );
    }
    const storage = this.allocFloatForWrite(data.length);
    storage.data.set(data);
    return storage;
  }

  release(storage: Storage): void {
    const own = this.own("release", "storage", storage);
    own.released = true;
    this.live.delete(own);
    if (this.unreleased?.unregister(own)) this.blocks!.release(own.data as Float32Array);
  }

  /** Marks every live storage released and rejects any later use of this memory. */
  dispose(): void {
    for (const storage of this.live) storage.released = true;
    this.live.clear();
    this.disposed = true;
    this.blocks?.reset();
  }

  /** Returns the data of an input of either dtype after checking its size. */
  anyDtype(op: string, name: string, storage: Storage, expectedSize: number): CpuArray {
    const own = this.own(op, name, storage);
    checkSize(op, name, own.size, expectedSize);
    return own.data;
  }

  /** Returns the data of a live storage of this backend, whatever its size and dtype. */
  whole(op: string, name: string, storage: Storage): CpuArray {
    return this.own(op, name, storage).data;
  }

  /** Returns the data of a float input after checking that it contains `expectedSize` elements. */
  floats(op: string, name: string, storage: Storage, expectedSize: number): FloatArray {
    const own = this.own(op, name, storage);
    if (own.dtype !== "f32") {
      throw new Error(`${op}: ${name} has dtype ${own.dtype} but must be f32`);
    }
    checkSize(op, name, own.size, expectedSize);
    return own.data as FloatArray;
  }

  /** Returns the data of an i32 input after checking that it contains `expectedSize` elements. */
  ints(op: string, name: string, storage: Storage, expectedSize: number): Int32Array {
    const own = this.own(op, name, storage);
    if (own.dtype !== "i32") {
      throw new Error(`${op}: ${name} has dtype ${own.dtype} but must be i32`);
    }
    checkSize(op, name, own.size, expectedSize);
    return own.data as Int32Array;
  }

  private own(op: string, name: string, storage: Storage): CpuStorage {
    this.checkUsable();
    if (!(storage instanceof CpuStorage) || storage.owner !== this) {
      throw new Error(
        `${op}: ${name} belongs to another backend; upload its data to this cpu backend first`,
      );
    }
    if (storage.released) {
      throw new Error(`${op}: ${name} (${storage.size} × ${storage.dtype}) was already released`);
    }
    return storage;
  }

  private track<A extends CpuArray>(storage: CpuStorage<A>): CpuStorage<A> {
    this.live.add(storage);
    return storage;
  }

  private checkUsable(): void {
    if (this.disposed) {
      throw new Error("cpu backend was disposed; create a new backend to run more ops");
    }
  }
}

/** Throws unless `value` is a non-negative integer, naming the op and the argument. */
export function checkCount(op: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${op}: ${name} is ${value} but must be a non-negative integer`);
  }
}

export function checkSize(op: string, name: string, actual: number, expected: number): void {
  if (actual !== expected) {
    throw new Error(
      `${op}: ${name} has ${actual} elements but the sizes given imply ${expected}`,
    );
  }
}

export function product(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
