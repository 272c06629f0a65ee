/**
 * One shared WebAssembly memory for the fast CPU backend's float32 storages. The SIMD kernels
 * read and write storages there in place instead of copying them in and out. A released block is
 * reused by the next storage of the same size, so a training step allocates no fresh memory.
 *
 * The memory is shared (backed by a SharedArrayBuffer) for two reasons: the matmul worker runs on
 * it, and growing a shared memory leaves every earlier view valid. Growing an unshared memory
 * detaches its buffer, which would empty every storage's view.
 */

import type { FloatBlocks } from "../storage.ts";
import type { MemoryImport } from "./encoder.ts";

const PAGE_BYTES = 65536;
/** 4 GiB of addresses: the maximum of a 32-bit memory. Pages are committed only on growth. */
const MAX_PAGES = 65536;

/**
 * The memory import of every kernel module that runs on a heap: a shared memory of up to 4 GiB. A
 * heap created with a smaller maximum still satisfies it.
 */
export const HEAP_MEMORY_IMPORT: MemoryImport = {
  initialPages: 1,
  maximumPages: MAX_PAGES,
  shared: true,
};
/** Blocks start on 64-byte cache lines and hold whole multiples of 16 floats. */
const BLOCK_FLOATS = 16;

export interface WasmHeapOptions {
  /** The most 64 KiB pages the memory may grow to; default 65536 (4 GiB). */
  maximumPages?: number;
}

export class WasmHeap {
  readonly memory: WebAssembly.Memory;
  /** Maximum bytes the memory may grow to. */
  readonly maximumBytes: number;
  /** Every SharedArrayBuffer this memory has returned; views over any of them are heap views. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  private view: Float32Array;
  /** Next free byte past every block handed out so far. */
  private top = 0;
  /** Released blocks by their size in floats (a multiple of BLOCK_FLOATS), as byte addresses. */
  private readonly free = new Map<number, number[]>();

  private constructor(memory: WebAssembly.Memory, maximumPages: number) {
    this.memory = memory;
    this.maximumBytes = maximumPages * PAGE_BYTES;
    this.view = new Float32Array(memory.buffer);
    this.buffers.add(memory.buffer);
  }

  static create(options: WasmHeapOptions = {}): WasmHeap {
    const maximum = options.maximumPages ?? MAX_PAGES;
    if (!Number.isInteger(maximum) || maximum < 1 || maximum > MAX_PAGES) {
      throw new Error(`wasm heap: maximumPages is ${maximum}; give a whole number in [1, 65536]`);
    }
    return new WasmHeap(new WebAssembly.Memory({ initial: 1, maximum, shared: true }), maximum);
  }

  /**
   * Returns blocks for a backend's storages, which stop at three quarters of the maximum, so the
   * kernels' scratch blocks always find room. Past that, storages are ordinary arrays that the
   * kernels copy in and out.
   */
  storageBlocks(): FloatBlocks {
    const limit = Math.floor(this.maximumBytes * 0.75);
    return {
      allocate: (size) => this.allocate(size, limit),
      release: (view) => this.release(view),
      reset: () => this.reset(),
    };
  }

  /** Current size of the memory in bytes. */
  get byteLength(): number {
    return this.memory.buffer.byteLength;
  }

  /**
   * Returns a view of `size` floats in a block of its own, or null when a new block would end
   * past `limitBytes` or the memory cannot grow to hold it. The contents are whatever the block
   * held before: callers that need zeros fill them.
   */
  allocate(size: number, limitBytes = this.maximumBytes): Float32Array | null {
    const floats = Math.max(BLOCK_FLOATS, Math.ceil(size / BLOCK_FLOATS) * BLOCK_FLOATS);
    let address = this.free.get(floats)?.pop();
    if (address === undefined) {
      const end = this.top + floats * 4;
      if (end > limitBytes || !this.reserve(end)) return null;
      address = this.top;
      this.top += floats * 4;
    }
    return new Float32Array(this.view.buffer, address, size);
  }

  /** Returns a view's block for reuse. The view must come from `allocate` and not be used again. */
  release(view: Float32Array): void {
    const floats = Math.max(BLOCK_FLOATS, Math.ceil(view.length / BLOCK_FLOATS) * BLOCK_FLOATS);
    const list = this.free.get(floats);
    if (list) list.push(view.byteOffset);
    else this.free.set(floats, [view.byteOffset]);
  }

  /**
   * Allocates a scratch block of `floats` floats for a kernel. When the memory is full it throws
   * an error that names `op` and ends with `fix`, the caller's alternative.
   */
  scratch(floats: number, op: string, fix: string): Float32Array {
    const block = this.allocate(floats);
    if (block === null) {
      const maximum = this.maximumBytes >= 2 ** 30
        ? `${this.maximumBytes / 2 ** 30} GiB`
        : `${this.maximumBytes / 2 ** 20} MiB`;
      throw new Error(
        `${op}: the kernel's scratch needs ${floats * 4} more bytes, past the ${maximum} ` +
          `maximum of the WebAssembly memory; ${fix}`,
      );
    }
    return block;
  }

  /** Instantiates a kernel module encoded with HEAP_MEMORY_IMPORT on this memory. */
  instantiate(bytes: Uint8Array<ArrayBuffer>): WebAssembly.Instance {
    return new WebAssembly.Instance(new WebAssembly.Module(bytes), {
      env: { memory: this.memory },
    });
  }

  /** Forgets every block, so the next allocations start again at address 0. */
  reset(): void {
    this.free.clear();
    this.top = 0;
  }

  /**
   * Returns the byte address of a view in this memory, or −1 for any other array. A view from
   * `allocate` may be read and written past its length up to the end of its block, a multiple of
   * 16 floats.
   */
  address(array: Float32Array | Int32Array): number {
    return this.buffers.has(array.buffer) ? array.byteOffset : -1;
  }

  /** Returns a float view of the whole memory as it is now. Take a new one after any allocation. */
  floats(): Float32Array {
    return this.view;
  }

  /** Grows the memory to at least `bytes`; false when that passes the maximum. */
  reserve(bytes: number): boolean {
    const current = this.memory.buffer.byteLength;
    if (bytes <= current) return true;
    // Grow by at least a quarter of the current size, so a run of allocations grows rarely.
    const needed = Math.ceil((bytes - current) / PAGE_BYTES);
    const pages = Math.max(needed, Math.ceil(current / PAGE_BYTES / 4));
    const available = (this.maximumBytes - current) / PAGE_BYTES;
    if (needed > available) return false;
    this.memory.grow(Math.min(pages, available));
    this.view = new Float32Array(this.memory.buffer);
    this.buffers.add(this.memory.buffer);
    return true;
  }
}
