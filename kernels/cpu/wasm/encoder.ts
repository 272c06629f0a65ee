/**
 * A minimal WebAssembly binary encoder: just enough of the format to emit the fast CPU kernels
 * from TypeScript, with no assembler or build step.
 *
 * It writes one module that imports its linear memory as `env.memory` and exports functions whose
 * bodies are built with `FunctionBuilder`. Only the instructions the kernels use are provided.
 * Opcode values are those of the WebAssembly 2.0 core specification, the fixed-width SIMD
 * proposal and the relaxed-SIMD proposal (for `f32x4.relaxed_madd`).
 */

export const I32 = 0x7f;
export const F32 = 0x7d;
export const V128 = 0x7b;
export type ValueType = typeof I32 | typeof F32 | typeof V128;

/** Appends the unsigned LEB128 encoding of `value`. */
function unsignedLeb(out: number[], value: number): void {
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
}

/** Appends the signed LEB128 encoding of a 32-bit integer. */
function signedLeb(out: number[], value: number): void {
  value |= 0;
  while (true) {
    const byte = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return;
  }
}

/** Emits the body of one function, instruction by instruction. */
export class FunctionBuilder {
  readonly code: number[] = [];
  private readonly localTypes: ValueType[] = [];

  constructor(readonly params: readonly ValueType[]) {}

  /** Declares a new local of `type` and returns its index. */
  local(type: ValueType): number {
    this.localTypes.push(type);
    return this.params.length + this.localTypes.length - 1;
  }

  // --- control ---------------------------------------------------------------------------------

  /** A `block` with no result; `br` to it jumps past its `end`. */
  block(): this {
    return this.bytes(0x02, 0x40);
  }
  /** A `loop` with no result; `br` to it jumps back to its start. */
  loop(): this {
    return this.bytes(0x03, 0x40);
  }
  end(): this {
    return this.bytes(0x0b);
  }
  br(depth: number): this {
    this.code.push(0x0c);
    unsignedLeb(this.code, depth);
    return this;
  }
  brIf(depth: number): this {
    this.code.push(0x0d);
    unsignedLeb(this.code, depth);
    return this;
  }

  // --- locals and integers ---------------------------------------------------------------------

  get(index: number): this {
    this.code.push(0x20);
    unsignedLeb(this.code, index);
    return this;
  }
  set(index: number): this {
    this.code.push(0x21);
    unsignedLeb(this.code, index);
    return this;
  }
  tee(index: number): this {
    this.code.push(0x22);
    unsignedLeb(this.code, index);
    return this;
  }
  i32Const(value: number): this {
    this.code.push(0x41);
    signedLeb(this.code, value);
    return this;
  }
  i32Eqz(): this {
    return this.bytes(0x45);
  }
  i32Ne(): this {
    return this.bytes(0x47);
  }
  i32LtU(): this {
    return this.bytes(0x49);
  }
  i32Add(): this {
    return this.bytes(0x6a);
  }
  i32Sub(): this {
    return this.bytes(0x6b);
  }
  i32Mul(): this {
    return this.bytes(0x6c);
  }

  // --- scalar floats ---------------------------------------------------------------------------

  f32Const(value: number): this {
    this.code.push(0x43, ...new Uint8Array(new Float32Array([value]).buffer));
    return this;
  }
  f32Add(): this {
    return this.bytes(0x92);
  }
  f32Div(): this {
    return this.bytes(0x95);
  }
  /** The larger of two f32; NaN in either gives NaN. */
  f32Max(): this {
    return this.bytes(0x97);
  }

  // --- memory ----------------------------------------------------------------------------------

  /** `f32.load` at the address on the stack plus a constant byte `offset`. */
  f32Load(offset = 0): this {
    return this.memory([0x2a], 2, offset);
  }
  f32Store(offset = 0): this {
    return this.memory([0x38], 2, offset);
  }
  /** `i64.load`: moves 8 bytes, such as two f32, in one scalar load. */
  i64Load(offset = 0): this {
    return this.memory([0x29], 3, offset);
  }
  i64Store(offset = 0): this {
    return this.memory([0x37], 3, offset);
  }
  v128Load(offset = 0): this {
    return this.memory([0xfd, 0x00], 4, offset);
  }
  /** Loads one f32 and copies it into all four lanes. */
  v128Load32Splat(offset = 0): this {
    return this.memory([0xfd, 0x09], 2, offset);
  }
  v128Store(offset = 0): this {
    return this.memory([0xfd, 0x0b], 4, offset);
  }

  // --- SIMD ------------------------------------------------------------------------------------

  /** Pushes a v128 with four equal f32 lanes. */
  f32x4Const(value: number): this {
    this.bytes(0xfd, 0x0c);
    const lane = new Uint8Array(new Float32Array([value]).buffer);
    for (let i = 0; i < 4; i++) this.code.push(...lane);
    return this;
  }
  f32x4Splat(): this {
    return this.bytes(0xfd, 0x13);
  }
  f32x4ExtractLane(lane: number): this {
    return this.bytes(0xfd, 0x1f, lane);
  }
  f32x4Add(): this {
    return this.simd(228);
  }
  f32x4Sub(): this {
    return this.simd(229);
  }
  f32x4Mul(): this {
    return this.simd(230);
  }
  f32x4Div(): this {
    return this.simd(231);
  }
  f32x4Sqrt(): this {
    return this.simd(227);
  }
  /** Lane-wise minimum; NaN in either lane gives NaN. */
  f32x4Min(): this {
    return this.simd(232);
  }
  /** Lane-wise maximum; NaN in either lane gives NaN. */
  f32x4Max(): this {
    return this.simd(233);
  }
  /** Lane-wise b < a ? b : a, which keeps a when either is NaN (pseudo-minimum). */
  f32x4Pmin(): this {
    return this.simd(234);
  }
  /** Lane-wise a < b ? b : a, which keeps a when either is NaN (pseudo-maximum). */
  f32x4Pmax(): this {
    return this.simd(235);
  }
  /** Rounds each lane to the nearest integer, ties to even. */
  f32x4Nearest(): this {
    return this.simd(106);
  }
  /** All ones in each lane where a < b, else zeros (false for NaN). */
  f32x4Lt(): this {
    return this.simd(67);
  }
  /** All ones in each lane where a > b, else zeros (false for NaN). */
  f32x4Gt(): this {
    return this.simd(68);
  }
  /** Converts f32 lanes to i32, saturating at the int32 range and giving 0 for NaN. */
  i32x4TruncSatF32x4S(): this {
    return this.simd(248);
  }
  /** Shifts each i32 lane left by the i32 count on top of the stack. */
  i32x4Shl(): this {
    return this.simd(171);
  }
  /** a & ~b. */
  v128AndNot(): this {
    return this.simd(79);
  }
  /** (a & mask) | (b & ~mask), with the mask on top of the stack. */
  v128Bitselect(): this {
    return this.simd(82);
  }
  /** a·b + c in each lane, fused or not at the engine's choice (relaxed SIMD). */
  f32x4RelaxedMadd(): this {
    return this.simd(261);
  }

  /** The function's code entry: local declarations, instructions and the closing `end`. */
  encode(): number[] {
    const body: number[] = [];
    unsignedLeb(body, this.localTypes.length);
    for (const type of this.localTypes) body.push(1, type);
    body.push(...this.code, 0x0b);
    const entry: number[] = [];
    unsignedLeb(entry, body.length);
    entry.push(...body);
    return entry;
  }

  private bytes(...values: number[]): this {
    this.code.push(...values);
    return this;
  }

  private simd(opcode: number): this {
    this.code.push(0xfd);
    unsignedLeb(this.code, opcode);
    return this;
  }

  private memory(opcode: number[], alignLog2: number, offset: number): this {
    this.code.push(...opcode, alignLog2);
    unsignedLeb(this.code, offset);
    return this;
  }
}

/** Imported memory limits, in 64 KiB pages. */
export interface MemoryImport {
  initialPages: number;
  maximumPages: number;
  shared: boolean;
}

/**
 * Encodes a module that imports `env.memory` and exports each function under its name. Every
 * function returns nothing.
 */
export function encodeModule(
  memory: MemoryImport,
  functions: readonly { name: string; body: FunctionBuilder }[],
): Uint8Array<ArrayBuffer> {
  const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  const section = (id: number, content: number[]) => {
    out.push(id);
    unsignedLeb(out, content.length);
    out.push(...content);
  };
  const name = (target: number[], text: string) => {
    const bytes = new TextEncoder().encode(text);
    unsignedLeb(target, bytes.length);
    target.push(...bytes);
  };

  // Type section: one signature per function, in order.
  const types: number[] = [];
  unsignedLeb(types, functions.length);
  for (const { body } of functions) {
    types.push(0x60);
    unsignedLeb(types, body.params.length);
    types.push(...body.params, 0);
  }
  section(1, types);

  const imports: number[] = [1];
  name(imports, "env");
  name(imports, "memory");
  imports.push(0x02, memory.shared ? 0x03 : 0x01);
  unsignedLeb(imports, memory.initialPages);
  unsignedLeb(imports, memory.maximumPages);
  section(2, imports);

  const declarations: number[] = [];
  unsignedLeb(declarations, functions.length);
  functions.forEach((_, i) => unsignedLeb(declarations, i));
  section(3, declarations);

  const exports: number[] = [];
  unsignedLeb(exports, functions.length);
  functions.forEach(({ name: exported }, i) => {
    name(exports, exported);
    exports.push(0x00);
    unsignedLeb(exports, i);
  });
  section(7, exports);

  const code: number[] = [];
  unsignedLeb(code, functions.length);
  for (const { body } of functions) code.push(...body.encode());
  section(10, code);

  return new Uint8Array(out);
}
