/**
 * The safetensors file format (Hugging Face), for the dtypes moelab stores: F32, F64 and I32.
 *
 * Layout: an 8-byte little-endian unsigned header length N, then N bytes of UTF-8 JSON, then the
 * tensor data. The JSON maps each tensor name to {dtype, shape, data_offsets: [begin, end]}, with
 * offsets in bytes from the start of the data section, plus an optional "__metadata__" map of
 * strings. The header is padded with spaces to a multiple of 8 bytes, so the data section starts
 * aligned. Tensors are stored little-endian, row-major, back to back without gaps.
 */

export type SafetensorsDType = "F32" | "F64" | "I32";

/** One stored tensor. */
export interface SafetensorsEntry {
  dtype: SafetensorsDType;
  shape: number[];
  data: Float32Array | Float64Array | Int32Array;
}

const BYTES: Record<SafetensorsDType, number> = { F32: 4, F64: 8, I32: 4 };

// The reference Rust implementation rejects headers over 100 MB; so do we.
const MAX_HEADER_BYTES = 100_000_000;

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // TypedArrays use the platform's byte order; every platform Deno supports is little-endian.
  throw new Error(
    "safetensors: this platform is big-endian, which moelab's writer does not support",
  );
}

/**
 * Encodes tensors, in the map's order, as a safetensors file. `metadata` goes into
 * `__metadata__`; its values must be strings.
 */
export function encodeSafetensors(
  tensors: ReadonlyMap<string, SafetensorsEntry>,
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") {
        throw new Error(
          `safetensors: metadata "${key}" is ${typeof value}; metadata values must be strings`,
        );
      }
    }
    header.__metadata__ = metadata;
  }

  let offset = 0;
  for (const [name, entry] of tensors) {
    checkEntry(name, entry);
    const bytes = entry.data.byteLength;
    header[name] = {
      dtype: entry.dtype,
      shape: entry.shape,
      data_offsets: [offset, offset + bytes],
    };
    offset += bytes;
  }

  const json = new TextEncoder().encode(JSON.stringify(header));
  const padding = (8 - (json.length % 8)) % 8;
  const headerLength = json.length + padding;

  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);

  let position = 8 + headerLength;
  for (const entry of tensors.values()) {
    out.set(
      new Uint8Array(entry.data.buffer, entry.data.byteOffset, entry.data.byteLength),
      position,
    );
    position += entry.data.byteLength;
  }
  return out;
}

/**
 * Decodes a safetensors file. `source` (a path, by default "safetensors data") names the file in
 * errors. Throws when the file is truncated, the header is not valid JSON, a dtype is not F32,
 * F64 or I32, or the data offsets do not tile the data section exactly.
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  source = "safetensors data",
): { tensors: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  const fail = (message: string): never => {
    throw new Error(`${source}: ${message}`);
  };
  if (bytes.length < 8) {
    fail(`file has ${bytes.length} bytes, fewer than the 8-byte header length; it is truncated`);
  }

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES) {
    fail(`header length ${headerLength} exceeds ${MAX_HEADER_BYTES} bytes; the file is corrupt`);
  }
  if (8 + headerLength > bytes.length) {
    fail(
      `header needs ${headerLength} bytes after the 8-byte length but the file has ${
        bytes.length - 8
      }; it is truncated`,
    );
  }

  let header: Record<string, unknown>;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(
      bytes.subarray(8, 8 + headerLength),
    );
    header = JSON.parse(text);
  } catch (error) {
    return fail(
      `header of ${headerLength} bytes is not valid UTF-8 JSON (${
        String(error)
      }); the file is corrupt`,
    );
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    fail("header is not a JSON object");
  }

  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;
  let metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  const tensors = new Map<string, SafetensorsEntry>();

  for (const [name, value] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(value, fail);
      continue;
    }
    const info = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = info?.dtype;
    if (dtype !== "F32" && dtype !== "F64" && dtype !== "I32") {
      return fail(
        `tensor ${name} has dtype ${JSON.stringify(dtype)}; this reader supports F32, F64 and I32`,
      );
    }
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      return fail(
        `tensor ${name} has shape ${JSON.stringify(shape)}; expected a list of integers ≥ 0`,
      );
    }
    const offsets = info.data_offsets;
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isInteger(o) && o >= 0)
    ) {
      return fail(
        `tensor ${name} has data_offsets ${JSON.stringify(offsets)}; expected [begin, end]`,
      );
    }
    const [begin, end] = offsets as number[];
    const expected = shape.reduce((p: number, d: number) => p * d, 1) * BYTES[dtype];
    if (end - begin !== expected) {
      fail(
        `tensor ${name} (${dtype}, shape [${
          shape.join(", ")
        }]) needs ${expected} bytes but data_offsets span ${end - begin}`,
      );
    }
    if (end > dataLength) {
      fail(
        `tensor ${name} ends at data byte ${end} but the data section has ${dataLength} bytes; the file is truncated`,
      );
    }

    // Copy, so the typed array is aligned whatever the header length was.
    const copy = bytes.slice(dataStart + begin, dataStart + end).buffer;
    const data = dtype === "F32"
      ? new Float32Array(copy)
      : dtype === "F64"
      ? new Float64Array(copy)
      : new Int32Array(copy);
    tensors.set(name, { dtype, shape: shape as number[], data });
    spans.push({ name, begin, end });
  }

  // The tensors must tile the data section: no gaps, no overlaps, nothing after the last one.
  spans.sort((a, b) => a.begin - b.begin);
  let covered = 0;
  for (const span of spans) {
    if (span.begin !== covered) {
      fail(
        `tensor ${span.name} starts at data byte ${span.begin} but the previous tensor ends at ${covered}`,
      );
    }
    covered = span.end;
  }
  if (covered !== dataLength) {
    fail(
      `tensors cover ${covered} data bytes but the data section has ${dataLength}; the file has trailing bytes`,
    );
  }

  return { tensors, metadata };
}

function parseMetadata(value: unknown, fail: (message: string) => never): Record<string, string> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    fail("__metadata__ is not a JSON object");
  }
  const metadata = value as Record<string, unknown>;
  for (const [key, v] of Object.entries(metadata)) {
    if (typeof v !== "string") fail(`__metadata__ entry "${key}" is not a string`);
  }
  return metadata as Record<string, string>;
}

function checkEntry(name: string, entry: SafetensorsEntry): void {
  if (name === "__metadata__") {
    throw new Error(`safetensors: "__metadata__" is reserved and cannot name a tensor`);
  }
  const arrayType = { F32: Float32Array, F64: Float64Array, I32: Int32Array }[entry.dtype];
  if (arrayType === undefined) {
    throw new Error(`safetensors: tensor ${name} has dtype ${entry.dtype}; use F32, F64 or I32`);
  }
  if (!(entry.data instanceof arrayType)) {
    throw new Error(
      `safetensors: tensor ${name} is ${entry.dtype} but its data is a ${entry.data.constructor.name}`,
    );
  }
  const size = entry.shape.reduce((p, d) => p * d, 1);
  if (!entry.shape.every((d) => Number.isInteger(d) && d >= 0) || size !== entry.data.length) {
    throw new Error(
      `safetensors: tensor ${name} has shape [${
        entry.shape.join(", ")
      }] but ${entry.data.length} values`,
    );
  }
}
