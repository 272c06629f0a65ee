/**
 * Per-dispatch parameters, packed into slots of one large uniform buffer.
 *
 * Each dispatch gets a 256-byte slot in a CPU-side shadow and binds the buffer at that slot with a
 * dynamic offset. The shadow is written with one `queue.writeBuffer` right before the submit that
 * uses it. Queue operations run in order, so the next batch's write lands after this batch ran.
 */

import type { ParamType } from "./ops/kernel.ts";

/** Bytes visible to one dispatch: 64 four-byte fields. */
export const UNIFORM_BINDING_BYTES = 256;

export class UniformArena {
  readonly buffer: GPUBuffer;
  readonly #slotBytes: number;
  readonly #slotCount: number;
  readonly #shadow: ArrayBuffer;
  readonly #u32: Uint32Array;
  readonly #i32: Int32Array;
  readonly #f32: Float32Array;
  #used = 0;

  constructor(device: GPUDevice, offsetAlignment: number, slotCount: number) {
    this.#slotBytes = Math.ceil(UNIFORM_BINDING_BYTES / offsetAlignment) * offsetAlignment;
    this.#slotCount = slotCount;
    this.#shadow = new ArrayBuffer(this.#slotBytes * slotCount);
    this.#u32 = new Uint32Array(this.#shadow);
    this.#i32 = new Int32Array(this.#shadow);
    this.#f32 = new Float32Array(this.#shadow);
    this.buffer = device.createBuffer({
      label: "moelab uniforms",
      size: this.#shadow.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  get full(): boolean {
    return this.#used === this.#slotCount;
  }

  get empty(): boolean {
    return this.#used === 0;
  }

  /** Packs `values` into the next slot and returns its byte offset; the caller checks `full` first. */
  write(types: readonly ParamType[], values: readonly number[]): number {
    if (types.length !== values.length) {
      throw new Error(
        `uniform slot: kernel declares ${types.length} params but got ${values.length}`,
      );
    }
    if (types.length * 4 > UNIFORM_BINDING_BYTES) {
      throw new Error(`uniform slot: ${types.length} params exceed ${UNIFORM_BINDING_BYTES} bytes`);
    }
    if (this.full) throw new Error("uniform slot: arena is full; flush before writing");

    const offset = this.#used * this.#slotBytes;
    const base = offset / 4;
    for (let i = 0; i < types.length; i++) {
      const value = values[i];
      if (types[i] === "f32") this.#f32[base + i] = value;
      else if (types[i] === "i32") {
        this.#i32[base + i] = checkInteger(value, -(2 ** 31), 2 ** 31 - 1);
      } else this.#u32[base + i] = checkInteger(value, 0, 2 ** 32 - 1);
    }
    this.#used++;
    return offset;
  }

  /** Writes the used part of the shadow to the GPU and starts the next batch at slot 0. */
  upload(queue: GPUQueue): void {
    if (this.#used === 0) return;
    queue.writeBuffer(this.buffer, 0, this.#shadow, 0, this.#used * this.#slotBytes);
    this.#used = 0;
  }

  destroy(): void {
    this.buffer.destroy();
  }
}

function checkInteger(value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`uniform slot: integer param ${value} is outside [${min}, ${max}]`);
  }
  return value;
}
