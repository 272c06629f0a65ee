/**
 * Storages and the size-bucketed buffer pool behind them.
 *
 * Buffers are bucketed by capacity (powers of two from 256 bytes), so a training step that
 * allocates the same shapes every step reuses the same buffers and creates none after the first.
 */

import type { DType, Storage } from "../backend.ts";

/** Bytes per element of both dtypes. */
export const ELEMENT_BYTES = 4;

const MIN_BUCKET_BYTES = 256;

export class GpuStorage implements Storage {
  /** The pooled buffer, or null once released. Its capacity may exceed `size` elements. */
  buffer: GPUBuffer | null;

  constructor(
    readonly owner: object,
    readonly size: number,
    readonly dtype: DType,
    buffer: GPUBuffer,
  ) {
    this.buffer = buffer;
  }

  get bytes(): number {
    return this.size * ELEMENT_BYTES;
  }
}

/** A pool of buffers with one usage, bucketed by capacity. */
export class BufferPool {
  buffersCreated = 0;
  readonly #free = new Map<number, GPUBuffer[]>();
  readonly #all = new Set<GPUBuffer>();

  constructor(
    private readonly device: GPUDevice,
    private readonly usage: GPUBufferUsageFlags,
    /** Capacities are capped here; a request above it gets a buffer of its own size. */
    private readonly maxBucketBytes: number,
    private readonly label: string,
  ) {}

  /** Takes a free buffer of at least `bytes` from the pool, creating one when the bucket is empty. */
  acquire(bytes: number): GPUBuffer {
    const capacity = bucketBytes(bytes, this.maxBucketBytes);
    const free = this.#free.get(capacity);
    const reused = free?.pop();
    if (reused) return reused;

    const buffer = this.device.createBuffer({
      label: `${this.label} ${capacity}`,
      size: capacity,
      usage: this.usage,
    });
    this.buffersCreated++;
    this.#all.add(buffer);
    return buffer;
  }

  /** Returns a buffer to its bucket. */
  release(buffer: GPUBuffer): void {
    const capacity = buffer.size;
    let free = this.#free.get(capacity);
    if (!free) {
      free = [];
      this.#free.set(capacity, free);
    }
    free.push(buffer);
  }

  /** Destroys every buffer this pool created, pooled or still in use. */
  destroy(): void {
    for (const buffer of this.#all) buffer.destroy();
    this.#all.clear();
    this.#free.clear();
  }
}

/**
 * Returns the bucket capacity for `bytes`: the next power of two of at least 256 bytes, or past
 * `maxBucketBytes`, `bytes` rounded up to a multiple of 256.
 */
export function bucketBytes(bytes: number, maxBucketBytes: number): number {
  let capacity = MIN_BUCKET_BYTES;
  while (capacity < bytes) capacity *= 2;
  if (capacity <= maxBucketBytes) return capacity;
  return Math.ceil(bytes / MIN_BUCKET_BYTES) * MIN_BUCKET_BYTES;
}
