/**
 * Compute pipelines cached by WGSL text, with explicit bind group layouts.
 *
 * Layouts are explicit because `layout: "auto"` cannot express the dynamic uniform offset. Creating
 * a pipeline is synchronous but its validation is not: each new pipeline's error scope is checked
 * in the background, and a failure is rethrown (with line, column and numbered source) by the next
 * `dispatch` or `settle`.
 */

import type { BufferAccess, ElementType, Kernel } from "./ops/kernel.ts";
import { UNIFORM_BINDING_BYTES } from "./uniforms.ts";

export interface CachedPipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}

export class PipelineCache {
  readonly #pipelines = new Map<string, CachedPipeline>();
  readonly #layouts = new Map<string, { group: GPUBindGroupLayout; pipeline: GPUPipelineLayout }>();
  readonly #checks = new Set<Promise<void>>();
  #failure: Error | null = null;

  constructor(private readonly device: GPUDevice) {}

  get size(): number {
    return this.#pipelines.size;
  }

  /** Returns the pipeline for a kernel, creating it on first use; throws an earlier compile failure. */
  get(kernel: Kernel): CachedPipeline {
    if (this.#failure) throw this.#failure;
    const cached = this.#pipelines.get(kernel.code);
    if (cached) return cached;

    const layouts = this.#layoutFor(kernel.access, kernel.types);
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label: kernel.label, code: kernel.code });
    const pipeline = this.device.createComputePipeline({
      label: kernel.label,
      layout: layouts.pipeline,
      compute: { module, entryPoint: "main" },
    });
    this.#watch(this.device.popErrorScope(), module, kernel);

    const entry = { pipeline, layout: layouts.group };
    this.#pipelines.set(kernel.code, entry);
    return entry;
  }

  /** Waits for pending pipeline validation and throws the first failure. */
  async settle(): Promise<void> {
    while (this.#checks.size > 0) await Promise.all([...this.#checks]);
    if (this.#failure) throw this.#failure;
  }

  /** Compiles WGSL on its own and throws the formatted compile error, if any. */
  async compile(label: string, code: string): Promise<GPUShaderModule> {
    // The error scope keeps an invalid module from reaching the device's uncaptured-error handler.
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label, code });
    const scopeError = await this.device.popErrorScope();
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((message) => message.type === "error");
    if (errors.length > 0) throw new Error(formatCompileError(label, code, errors));
    if (scopeError) throw new Error(`WGSL module ${label} is invalid: ${scopeError.message}`);
    return module;
  }

  #watch(scope: Promise<GPUError | null>, module: GPUShaderModule, kernel: Kernel): void {
    const check = scope.then(async (error) => {
      if (!error || this.#failure) return;
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((message) => message.type === "error");
      this.#failure = new Error(
        errors.length > 0
          ? formatCompileError(kernel.label, kernel.code, errors)
          : `WGSL pipeline ${kernel.label} is invalid: ${error.message}\n${
            numberLines(kernel.code)
          }`,
      );
    }).finally(() => this.#checks.delete(check));
    this.#checks.add(check);
  }

  // A layout is shared only by kernels with the same access and element type per binding, and a
  // vec4 binding declares its 16-byte minimum: with layouts shared across element types, wgpu
  // rejected a scalar kernel's 4-byte binding recorded after a vec4 matmul in the same pass.
  #layoutFor(access: readonly BufferAccess[], types: readonly ElementType[]) {
    const key = access.map((mode, i) => `${mode}:${types[i]}`).join(",");
    const cached = this.#layouts.get(key);
    if (cached) return cached;

    const entries: GPUBindGroupLayoutEntry[] = [{
      binding: 0,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: UNIFORM_BINDING_BYTES },
    }];
    access.forEach((mode, i) =>
      entries.push({
        binding: i + 1,
        visibility: GPUShaderStage.COMPUTE,
        buffer: {
          type: mode === "read" ? "read-only-storage" : "storage",
          ...(types[i].startsWith("vec4") ? { minBindingSize: 16 } : {}),
        },
      })
    );
    const group = this.device.createBindGroupLayout({ label: `layout ${key}`, entries });
    const pipeline = this.device.createPipelineLayout({ bindGroupLayouts: [group] });
    const layouts = { group, pipeline };
    this.#layouts.set(key, layouts);
    return layouts;
  }
}

/** Builds "label:line:column: message" lines followed by the numbered WGSL source. */
export function formatCompileError(
  label: string,
  code: string,
  messages: readonly GPUCompilationMessage[],
): string {
  const lines = messages.map((message) =>
    `${label}:${message.lineNum}:${message.linePos}: ${firstLine(message.message)}`
  );
  return `WGSL compile error in ${label}\n${lines.join("\n")}\n${numberLines(code)}`;
}

function firstLine(text: string): string {
  return text.trim().split("\n")[0];
}

function numberLines(code: string): string {
  const lines = code.split("\n");
  const width = String(lines.length).length;
  return lines.map((line, i) => `${String(i + 1).padStart(width)} | ${line}`).join("\n");
}
