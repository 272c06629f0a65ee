/** Argument checks shared by the op launchers; messages name the op, the argument and its value. */

export function checkCount(op: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${op}: ${name} is ${value} but must be a non-negative integer`);
  }
}

export function checkFinite(op: string, name: string, value: number): void {
  if (!Number.isFinite(value)) {
    throw new Error(`${op}: ${name} is ${value} but must be a finite number`);
  }
}

/** Checks a shape of rank ≤ 6 with non-negative integer sizes and returns its element count. */
export function checkShape(op: string, name: string, shape: readonly number[]): number {
  if (shape.length > MAX_RANK) {
    throw new Error(
      `${op}: ${name} [${shape.join(", ")}] has rank ${shape.length}; at most ${MAX_RANK}`,
    );
  }
  let size = 1;
  for (const dim of shape) {
    checkCount(op, `${name} [${shape.join(", ")}] dimension`, dim);
    size *= dim;
  }
  return size;
}

/** Highest rank of the strided kernels (binary, sumToShape, transpose). */
export const MAX_RANK = 6;

/** Pads a shape with leading 1s to `MAX_RANK`. */
export function padShape(shape: readonly number[]): number[] {
  return [...Array(MAX_RANK - shape.length).fill(1), ...shape];
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

/**
 * WGSL that splits the flat index `name` into coordinates of a `MAX_RANK` shape held in params
 * `<shapeName>0..5` and accumulates `Σ coord_d · params.<strideName>d` into `var <strideName>Offset` for each stride
 * name. Declares those variables and the remainder variable `rem`.
 */
export function unravelWgsl(
  index: string,
  shapeName: string,
  strideNames: readonly string[],
  rem = "rem",
): string {
  const lines = [`var ${rem} = ${index};`];
  for (const stride of strideNames) lines.push(`var ${stride}Offset = 0u;`);
  for (let d = MAX_RANK - 1; d >= 0; d--) {
    const dim = `params.${shapeName}${d}`;
    lines.push(`{ let c = ${rem} % ${dim}; ${rem} = ${rem} / ${dim};`);
    for (const stride of strideNames) lines.push(`  ${stride}Offset += c * params.${stride}${d};`);
    lines.push("}");
  }
  return lines.join("\n    ");
}

/** Uniform declarations `<prefix>0..5: u32`. */
export function rankParams(prefix: string): [string, "u32"][] {
  return Array.from({ length: MAX_RANK }, (_, d) => [`${prefix}${d}`, "u32"]);
}
