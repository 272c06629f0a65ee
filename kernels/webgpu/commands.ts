/**
 * Command batching: dispatches, copies and uploads are recorded into one pending command encoder
 * and submitted together by `flush`.
 *
 * Ordering invariant: `queue.writeBuffer` runs before any later `submit`, including the submit of
 * commands recorded earlier. So an upload never writes a pooled buffer directly while work is
 * pending (a released buffer may still be read by a recorded dispatch). It writes into a staging
 * arena instead and records a copy, which runs in order with the recorded dispatches.
 */

import type { Grid, Kernel } from "./ops/kernel.ts";
import type { PipelineCache } from "./pipelines.ts";
import type { UniformArena } from "./uniforms.ts";
import { UNIFORM_BINDING_BYTES } from "./uniforms.ts";

/** Bytes of the staging arena for uploads recorded between submits. */
const UPLOAD_ARENA_BYTES = 4 * 1024 * 1024;

/**
 * Cached bind groups past this count are all dropped. The pool gives a training step the same
 * buffers every step, so steps stop adding bind groups. The tiny GPT of bench/moelab.ts (188
 * dispatches a step) caches 207 after its first step and no more after later ones.
 */
const MAX_CACHED_BIND_GROUPS = 4096;

/** A storage binding: a buffer and the bytes of it the kernel may touch. */
export interface Binding {
  buffer: GPUBuffer;
  bytes: number;
}

export class CommandRecorder {
  submits = 0;
  dispatches = 0;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #uploadArena: GPUBuffer | null = null;
  #uploadUsed = 0;
  /**
   * Bind groups by layout, buffers and binding sizes. One bind group per dispatch made resident
   * memory grow by about 90 MiB over 1000 steps of a small GPT on Deno 2.9 and llvmpipe, because
   * each one's native memory is freed only when V8's major GC collects its wrapper.
   */
  readonly #bindGroups = new Map<string, GPUBindGroup>();
  readonly #objectIds = new WeakMap<object, number>();
  #nextObjectId = 1;

  constructor(
    private readonly device: GPUDevice,
    private readonly uniforms: UniformArena,
    private readonly pipelines: PipelineCache,
  ) {}

  /** True when commands are recorded but not yet submitted. */
  get pending(): boolean {
    return this.#encoder !== null;
  }

  /** Number of bind groups held for reuse. */
  get bindGroupsCached(): number {
    return this.#bindGroups.size;
  }

  dispatch(kernel: Kernel, bindings: readonly Binding[], params: readonly number[], grid: Grid) {
    if (bindings.length !== kernel.access.length) {
      throw new Error(
        `${kernel.label}: kernel binds ${kernel.access.length} storages but got ${bindings.length}`,
      );
    }
    const { pipeline, layout } = this.pipelines.get(kernel);
    if (this.uniforms.full) this.flush();
    const offset = this.uniforms.write(kernel.paramTypes, params);

    const bindGroup = this.#bindGroup(layout, bindings);

    const pass = this.#computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup, [offset]);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    this.dispatches++;
  }

  copy(source: GPUBuffer, destination: GPUBuffer, bytes: number, sourceOffset = 0): void {
    if (bytes === 0) return;
    this.#endPass();
    this.#commandEncoder().copyBufferToBuffer(source, sourceOffset, destination, 0, bytes);
  }

  clear(buffer: GPUBuffer, bytes: number): void {
    if (bytes === 0) return;
    this.#endPass();
    this.#commandEncoder().clearBuffer(buffer, 0, bytes);
  }

  /** Writes host bytes into `destination`, ordered after every dispatch recorded so far. */
  upload(destination: GPUBuffer, data: Float32Array | Int32Array): void {
    // A whole typed array, so writeBuffer needs no element offsets.
    const view = data as ArrayBufferView<ArrayBuffer>;
    const bytes = data.byteLength;
    if (bytes === 0) return;
    if (!this.pending) {
      this.device.queue.writeBuffer(destination, 0, view);
      return;
    }
    if (bytes > UPLOAD_ARENA_BYTES - this.#uploadUsed) {
      this.flush();
      this.device.queue.writeBuffer(destination, 0, view);
      return;
    }

    this.#uploadArena ??= this.device.createBuffer({
      label: "moelab upload arena",
      size: UPLOAD_ARENA_BYTES,
      usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    const offset = this.#uploadUsed;
    this.device.queue.writeBuffer(this.#uploadArena, offset, view);
    this.#uploadUsed += Math.ceil(bytes / 4) * 4;
    this.copy(this.#uploadArena, destination, bytes, offset);
  }

  /** Writes the uniforms and submits everything recorded since the last flush. */
  flush(): void {
    if (!this.#encoder) return;
    this.#endPass();
    this.uniforms.upload(this.device.queue);
    const commands = this.#encoder.finish();
    this.#encoder = null;
    this.#uploadUsed = 0;
    this.device.queue.submit([commands]);
    this.submits++;
  }

  /** Records and submits a copy of `bytes` into a mappable buffer, after all pending work. */
  submitReadback(source: GPUBuffer, staging: GPUBuffer, bytes: number): void {
    this.copy(source, staging, bytes);
    this.flush();
  }

  destroy(): void {
    this.#endPass();
    this.#bindGroups.clear();
    this.#encoder = null;
    this.#uploadArena?.destroy();
    this.#uploadArena = null;
  }

  /** Returns the cached bind group for `layout` and `bindings`, creating it on first use. */
  #bindGroup(layout: GPUBindGroupLayout, bindings: readonly Binding[]): GPUBindGroup {
    // A zero-size storage still binds 4 bytes, the smallest valid storage binding.
    const sizes = bindings.map((binding) => Math.max(binding.bytes, 4));
    let key = `${this.#objectId(layout)}`;
    bindings.forEach((binding, i) => key += `,${this.#objectId(binding.buffer)}:${sizes[i]}`);
    const cached = this.#bindGroups.get(key);
    if (cached) return cached;

    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: this.uniforms.buffer, size: UNIFORM_BINDING_BYTES } },
    ];
    bindings.forEach((binding, i) =>
      entries.push({ binding: i + 1, resource: { buffer: binding.buffer, size: sizes[i] } })
    );
    const bindGroup = this.device.createBindGroup({ layout, entries });
    if (this.#bindGroups.size >= MAX_CACHED_BIND_GROUPS) this.#bindGroups.clear();
    this.#bindGroups.set(key, bindGroup);
    return bindGroup;
  }

  #objectId(object: object): number {
    let id = this.#objectIds.get(object);
    if (id === undefined) {
      id = this.#nextObjectId++;
      this.#objectIds.set(object, id);
    }
    return id;
  }

  #commandEncoder(): GPUCommandEncoder {
    this.#encoder ??= this.device.createCommandEncoder({ label: "moelab batch" });
    return this.#encoder;
  }

  #computePass(): GPUComputePassEncoder {
    this.#pass ??= this.#commandEncoder().beginComputePass();
    return this.#pass;
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }
}
