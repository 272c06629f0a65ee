/**
 * Kernel declarations: one WGSL compute program plus the layout of its parameters and buffers.
 *
 * Every kernel binds the per-dispatch parameters as a uniform struct at binding 0 (with a dynamic
 * offset into the shared uniform buffer) and its storage buffers at bindings 1..N in declaration
 * order. `defineKernel` generates those declarations, so the WGSL, the bind group layout and the
 * uniform packing cannot disagree.
 */

import type { DType, Storage } from "../../backend.ts";

/** Scalar type of one uniform field, packed as 4 bytes. */
export type ParamType = "u32" | "i32" | "f32";
/**
 * WGSL element type of a storage binding. "u32" moves raw bits of either dtype. The vec4 types
 * read four elements per load, so the storage size must be a multiple of 4.
 */
export type ElementType = "f32" | "i32" | "u32" | "vec4<f32>" | "vec4<u32>";
export type BufferAccess = "read" | "read_write";

export interface BufferDecl {
  name: string;
  type: ElementType;
  access: BufferAccess;
}

export interface KernelSpec {
  /** Short label for error messages and GPU debugging tools. */
  label: string;
  /** Threads per workgroup; the body reads it as the constant `WG`. */
  workgroupSize: number;
  buffers: BufferDecl[];
  /** Uniform fields in packing order, readable in WGSL as `params.<name>`. */
  params: [name: string, type: ParamType][];
  /** WGSL after the generated declarations; must define the entry point `main`. */
  body: string;
}

export interface Kernel {
  label: string;
  code: string;
  paramTypes: ParamType[];
  access: BufferAccess[];
  /** Element type of each storage binding, in binding order. */
  types: ElementType[];
}

/** Workgroup counts of one dispatch: [x, y, z]. */
export type Grid = [number, number, number];

/** The slice of the backend that op launchers use. */
export interface KernelContext {
  /** Allocates an output storage (NaN-poisoned when poisoning is on). */
  output(size: number, dtype: DType): Storage;
  /** Checks that `storage` is live, belongs to this backend and has the expected size and dtype. */
  input(op: string, name: string, storage: Storage, size: number, dtype: DType | "any"): Storage;
  /** Records one dispatch; `params` follow the kernel's declared order. */
  dispatch(kernel: Kernel, storages: Storage[], params: number[], grid: Grid): void;
  /** Releases a temporary storage once the recorded work no longer needs it. */
  release(storage: Storage): void;
}

/** Workgroups per grid dimension that every adapter supports (the WebGPU default limit). */
export const MAX_GROUPS_PER_DIM = 65535;

/** Grid for `groups` workgroups, spilling into y past the per-dimension limit. */
export function groupGrid(groups: number): Grid {
  if (groups <= MAX_GROUPS_PER_DIM) return [Math.max(groups, 1), 1, 1];
  const y = Math.ceil(groups / MAX_GROUPS_PER_DIM);
  if (y > MAX_GROUPS_PER_DIM) {
    throw new Error(
      `dispatch needs ${groups} workgroups, more than ${MAX_GROUPS_PER_DIM}² allowed`,
    );
  }
  return [MAX_GROUPS_PER_DIM, y, 1];
}

/** Grid with one thread per element for `threads` elements. */
export function threadGrid(threads: number, workgroupSize: number): Grid {
  return groupGrid(Math.ceil(threads / workgroupSize));
}

/**
 * WGSL helpers available to every body. `flatThread` and `flatGroup` undo the spill of large grids
 * into y, so bodies index 1-D work and bounds-check against their own size.
 */
const PRELUDE = `
fn flatThread(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.y * nwg.x * WG + gid.x;
}
fn flatGroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.y * nwg.x + wid.x;
}
fn negInf() -> f32 {
  return bitcast<f32>(0xff800000u);
}
`;

export function defineKernel(spec: KernelSpec): Kernel {
  const fields = spec.params.length > 0
    ? spec.params.map(([name, type]) => `  ${name}: ${type},`)
    : ["  unused: u32,"];
  const bindings = spec.buffers.map((buffer, i) =>
    `@group(0) @binding(${
      i + 1
    }) var<storage, ${buffer.access}> ${buffer.name}: array<${buffer.type}>;`
  );

  const code = [
    `// ${spec.label}`,
    `const WG: u32 = ${spec.workgroupSize}u;`,
    "struct Params {",
    ...fields,
    "}",
    "@group(0) @binding(0) var<uniform> params: Params;",
    ...bindings,
    PRELUDE,
    spec.body,
  ].join("\n");

  return {
    label: spec.label,
    code,
    paramTypes: spec.params.map(([, type]) => type),
    access: spec.buffers.map((buffer) => buffer.access),
    types: spec.buffers.map((buffer) => buffer.type),
  };
}

/** Memoizes kernel generation by a short key, so hot ops skip rebuilding WGSL text. */
export function kernelCache<K>(build: (key: K) => Kernel): (key: K) => Kernel {
  const cache = new Map<K, Kernel>();
  return (key) => {
    let kernel = cache.get(key);
    if (!kernel) {
      kernel = build(key);
      cache.set(key, kernel);
    }
    return kernel;
  };
}

export function ro(name: string, type: ElementType = "f32"): BufferDecl {
  return { name, type, access: "read" };
}

export function rw(name: string, type: ElementType = "f32"): BufferDecl {
  return { name, type, access: "read_write" };
}
