import assert from "node:assert/strict";
import { join } from "node:path";
import {
  decodeSafetensors,
  encodeSafetensors,
  type SafetensorsEntry,
} from "../../experiments/checkpoint/safetensors.ts";

// Files for the Python reader go below this folder, which is removed when the test module unloads.
const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-safetensors-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

function sample(): Map<string, SafetensorsEntry> {
  return new Map<string, SafetensorsEntry>([
    ["blocks.0.mlp.up.weight", {
      dtype: "F32",
      shape: [2, 3],
      data: Float32Array.from([1, -2, 3.5, 0, 1e-8, -1e30]),
    }],
    ["step", { dtype: "I32", shape: [], data: Int32Array.from([42]) }],
    ["adamw.v.bias", { dtype: "F64", shape: [3], data: Float64Array.from([0.1, 1 / 3, -Math.PI]) }],
    ["empty", { dtype: "F32", shape: [0, 4], data: new Float32Array(0) }],
  ]);
}

function headerLength(bytes: Uint8Array): number {
  return Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
}

async function python(
  code: string,
  path: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command("python3", {
    args: ["-c", code, path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function canImport(module: string): Promise<boolean> {
  try {
    return (await python(`import ${module}`, "")).code === 0;
  } catch {
    return false; // no python3 on PATH
  }
}

Deno.test("safetensors round trip", () => {
  const tensors = sample();

  const decoded = decodeSafetensors(encodeSafetensors(tensors, { step: "7" }));

  assert.deepEqual([...decoded.tensors.keys()], [...tensors.keys()]);
  for (const [name, entry] of tensors) assert.deepEqual(decoded.tensors.get(name), entry, name);
  assert.deepEqual(decoded.metadata, { step: "7" });
});

Deno.test("safetensors header aligned to 8 bytes", () => {
  for (const key of ["a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh"]) {
    const bytes = encodeSafetensors(
      new Map([[key, { dtype: "F32", shape: [1], data: Float32Array.from([1]) }]]),
    );

    assert.equal(headerLength(bytes) % 8, 0, key);
  }
});

Deno.test("safetensors 42854-byte header gets 2 spaces", () => {
  const tensors = new Map<string, SafetensorsEntry>([["w", {
    dtype: "F32",
    shape: [1],
    data: Float32Array.from([1]),
  }]]);
  const unpadded = (filler: string) => {
    const bytes = encodeSafetensors(tensors, { filler });
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength(bytes)));
    return header.trimEnd().length;
  };
  const filler = "x".repeat(42854 - unpadded(""));

  const bytes = encodeSafetensors(tensors, { filler });
  const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength(bytes)));

  assert.equal(header.trimEnd().length, 42854);
  assert.equal(headerLength(bytes), 42856);
  assert.equal(header.slice(-2), "  ");
});

Deno.test("safetensors truncated file", () => {
  const bytes = encodeSafetensors(sample());

  assert.throws(
    () => decodeSafetensors(bytes.subarray(0, 5), "model.safetensors"),
    /model\.safetensors: file has 5 bytes/,
  );
  assert.throws(
    () => decodeSafetensors(bytes.subarray(0, 40), "model.safetensors"),
    /model\.safetensors: header needs \d+ bytes .* the file has 32; it is truncated/,
  );
  assert.throws(
    () => decodeSafetensors(bytes.subarray(0, bytes.length - 4), "model.safetensors"),
    /ends at data byte \d+ but the data section has \d+ bytes; the file is truncated/,
  );
});

Deno.test("safetensors corrupt header", () => {
  const bytes = encodeSafetensors(sample());
  const corrupt = bytes.slice();
  corrupt[8] = "[".charCodeAt(0);
  const huge = bytes.slice();
  new DataView(huge.buffer).setBigUint64(0, 2n ** 40n, true);

  assert.throws(
    () => decodeSafetensors(corrupt, "x.safetensors"),
    /x\.safetensors: header of \d+ bytes is not valid UTF-8 JSON/,
  );
  assert.throws(
    () => decodeSafetensors(huge, "x.safetensors"),
    /header length 1099511627776 exceeds/,
  );
});

Deno.test("safetensors trailing bytes rejected", () => {
  const bytes = encodeSafetensors(sample());
  const longer = new Uint8Array(bytes.length + 4);
  longer.set(bytes);

  assert.throws(
    () => decodeSafetensors(longer),
    /tensors cover \d+ data bytes but the data section has \d+/,
  );
});

Deno.test("safetensors unsupported dtype", () => {
  const header = new TextEncoder().encode(
    JSON.stringify({ w: { dtype: "BF16", shape: [1], data_offsets: [0, 2] } }) + "  ",
  );
  const bytes = new Uint8Array(8 + header.length + 2);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
  bytes.set(header, 8);

  assert.throws(
    () => decodeSafetensors(bytes),
    /tensor w has dtype "BF16"; this reader supports F32, F64 and I32/,
  );
});

Deno.test("safetensors encode validates entries", () => {
  const mismatched = new Map<string, SafetensorsEntry>([["w", {
    dtype: "F32",
    shape: [3],
    data: Float32Array.from([1, 2]),
  }]]);
  const wrongArray = new Map<string, SafetensorsEntry>([["w", {
    dtype: "F32",
    shape: [1],
    data: Float64Array.from([1]),
  }]]);

  assert.throws(() => encodeSafetensors(mismatched), /tensor w has shape \[3\] but 2 values/);
  assert.throws(
    () => encodeSafetensors(wrongArray),
    /tensor w is F32 but its data is a Float64Array/,
  );
});

Deno.test("safetensors python stdlib reads file", async (t) => {
  if (!(await canImport("json"))) {
    await t.step({ name: "skipped: python3 is not on PATH", ignore: true, fn: () => {} });
    return;
  }
  const path = join(TEMP_ROOT, "stdlib.safetensors");
  await Deno.writeFile(path, encodeSafetensors(sample(), { step: "7" }));

  // An independent reader written from the format description: struct and json only.
  const { code, stdout, stderr } = await python(
    `import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
info = header["blocks.0.mlp.up.weight"]
begin, end = info["data_offsets"]
values = struct.unpack("<6f", data[8 + n + begin:8 + n + end])
print(n % 8, header["__metadata__"]["step"], info["shape"], values[2])`,
    path,
  );

  assert.equal(code, 0, stderr);
  assert.equal(stdout.trim(), "0 7 [2, 3] 3.5");
});

Deno.test("safetensors python package reads file", async (t) => {
  if (!(await canImport("safetensors.numpy"))) {
    await t.step({
      name: "skipped: the python safetensors package is not installed",
      ignore: true,
      fn: () => {},
    });
    return;
  }
  const path = join(TEMP_ROOT, "package.safetensors");
  await Deno.writeFile(path, encodeSafetensors(sample()));

  const { code, stdout, stderr } = await python(
    `import sys
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
print(t["blocks.0.mlp.up.weight"].shape, int(t["step"]), t["adamw.v.bias"].dtype)`,
    path,
  );

  assert.equal(code, 0, stderr);
  assert.equal(stdout.trim(), "(2, 3) 42 float64");
});
