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
  /** Creation index of every buffer, so a free list can give out its earliest-created buffer. */
  readonly #order = new Map<GPUBuffer, number>();

  constructor(
    private readonly device: GPUDevice,
    private readonly usage: GPUBufferUsageFlags,
    /** Capacities are capped here; a request above it gets a buffer of its own size. */
    private readonly maxBucketBytes: number,
    private readonly label: string,
  ) {}

  /**
   * Takes a free buffer of at least `bytes` from the pool, creating one when the bucket is empty.
   * It takes the earliest-created free buffer, so the buffers given out depend only on the set of
   * free buffers, not on the order of their release. Each training step then gets the same buffers
   * and reuses its cached bind groups. With last-released-first reuse, the tiny GPT's steps kept
   * getting new buffer assignments for 50 to 100 steps.
   */
  acquire(bytes: number): GPUBuffer {
    const capacity = bucketBytes(bytes, this.maxBucketBytes);
    const free = this.#free.get(capacity);
    if (free && free.length > 0) return this.#takeEarliest(free);

    const buffer = this.device.createBuffer({
      label: `${this.label} ${capacity}`,
      size: capacity,
      usage: this.usage,
    });
    this.#order.set(buffer, this.buffersCreated++);
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

  /** Removes and returns the earliest-created buffer of a non-empty free list. */
  #takeEarliest(free: GPUBuffer[]): GPUBuffer {
    let best = 0;
    for (let i = 1; i < free.length; i++) {
      if (this.#order.get(free[i])! < this.#order.get(free[best])!) best = i;
    }
    const buffer = free[best];
    free[best] = free[free.length - 1];
    free.pop();
    return buffer;
  }

  /** Destroys every buffer this pool created, pooled or still in use. */
  destroy(): void {
    for (const buffer of this.#order.keys()) buffer.destroy();
    this.#order.clear();
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
