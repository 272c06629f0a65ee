/**
 * WebAssembly SIMD kernels built on a 4-lane float32 exp: `exp`, `gelu` and `geluBackward` over
 * arrays in linear memory. `Math.exp` costs about 9.5 ns per element in a float32 loop on a 2-core
 * AMD EPYC VM, against about 0.5 ns for a subtraction, so GELU, softmax and cross-entropy were
 * bound by it.
 *
 * The exp is the range reduction and polynomial of the Cephes library's `expf` (Stephen L.
 * Moshier): x = n·ln 2 + r with |r| ≤ ln 2 / 2, exp(r) by a degree-6 polynomial, and 2ⁿ built in
 * the exponent bits. Its relative error is a few float32 ulps for x in [−87, 88.38]. Below −87
 * (where exp(x) < 1.7e-38, near the smallest normal float32) it gives 0, above ln(FLT_MAX) =
 * 88.72 it gives +Infinity, and between 88.38 and 88.72 it gives exp(88.38). NaN gives NaN.
 *
 * Every function takes byte addresses and a count of 4-float vectors, which must be ≥ 1 because
 * the loops test their condition at the bottom.
 */

import {
  encodeModule,
  FunctionBuilder,
  I32,
  type MemoryImport,
  V128,
  type ValueType,
} from "./encoder.ts";

/**
 * Below this the kernel returns 0. It sits just above ln(2⁻¹²⁶) = −87.34, so no result is a
 * subnormal float32: on x86 an arithmetic result that is subnormal costs about a hundred cycles,
 * which made a causal softmax, whose hidden half is −Infinity, twice as slow.
 */
const EXP_LOW = -87;
/** The largest x whose 2ⁿ in the reduction stays a finite float32 (n ≤ 127). */
const EXP_CLAMP_HIGH = 88.3762626647949;
/** ln(FLT_MAX): above it exp overflows float32 and the kernel returns +Infinity. */
const EXP_OVERFLOW = 88.72283905206835;
const FLT_MAX = 3.4028234663852886e38;
const LOG2E = 1.44269504088896341;
/** ln 2 split in two (Cody and Waite), so n·LN2_HI is exact in float32 for |n| ≤ 128. */
const LN2_HI = 0.693359375;
const LN2_LO = -2.12194440e-4;
/** Cephes expf coefficients of exp(r) ≈ 1 + r + r²·P(r), highest degree first. */
const EXP_POLY = [
  1.9875691500e-4,
  1.3981999507e-3,
  8.3334519073e-3,
  4.1665795894e-2,
  1.6666665459e-1,
  5.0000001201e-1,
];

/** sqrt(2/π) and the cubic coefficient of GPT-2's tanh approximation of GELU. */
const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_CUBIC = 0.044715;

/** Adding and subtracting 1.5·2²³ rounds a float32 of magnitude below 2²² to an integer. */
const ROUND_MAGIC = 12582912;

/**
 * Scratch v128 locals that `emitExp` needs, and its constants held in locals: V8 rebuilds a
 * `v128.const` with several instructions at every use, which made the exp twice as slow.
 */
interface ExpLocals {
  clamped: number;
  shifted: number;
  n: number;
  r: number;
  poly: number;
  constants: Map<number, number>;
}

/**
 * Declares the locals of `emitExp` and sets its constants and the caller's `extra` constants
 * (read with `constant`); call it before any loop.
 */
function expLocals(f: FunctionBuilder, extra: readonly number[] = []): ExpLocals {
  const constants = new Map<number, number>();
  const values = [
    EXP_LOW,
    EXP_CLAMP_HIGH,
    LOG2E,
    ROUND_MAGIC,
    LN2_HI,
    LN2_LO,
    ...EXP_POLY,
    1,
    127,
    Infinity,
    EXP_OVERFLOW,
    ...extra,
  ];
  for (const value of new Set(values)) {
    const local = f.local(V128);
    f.f32x4Const(value).set(local);
    constants.set(value, local);
  }
  return {
    clamped: f.local(V128),
    shifted: f.local(V128),
    n: f.local(V128),
    r: f.local(V128),
    poly: f.local(V128),
    constants,
  };
}

/** Pushes a constant that `expLocals` set. */
function pushConstant(f: FunctionBuilder, t: ExpLocals, value: number): FunctionBuilder {
  const local = t.constants.get(value);
  if (local === undefined) throw new Error(`exp kernel: constant ${value} was not declared`);
  return f.get(local);
}

/** Pushes exp of the four lanes of local `x` onto the stack. */
function emitExp(f: FunctionBuilder, x: number, t: ExpLocals): void {
  const constant = (value: number) => pushConstant(f, t, value);

  // pmax and pmin keep x when it is NaN and compile to one instruction each, where max and min
  // need several for their NaN and signed-zero rules.
  f.get(x);
  constant(EXP_LOW).f32x4Pmax();
  constant(EXP_CLAMP_HIGH).f32x4Pmin().set(t.clamped);

  // n = round(x·log2 e): after adding 1.5·2²³ the float's low mantissa bits hold n + 2²², and
  // subtracting it again leaves n as a float.
  f.get(t.clamped);
  constant(LOG2E).f32x4Mul();
  constant(ROUND_MAGIC).f32x4Add().tee(t.shifted);
  constant(ROUND_MAGIC).f32x4Sub().set(t.n);

  // r = x − n·ln 2, in two steps so the large part cancels exactly.
  f.get(t.clamped).get(t.n);
  constant(LN2_HI).f32x4Mul().f32x4Sub();
  f.get(t.n);
  constant(LN2_LO).f32x4Mul().f32x4Sub().set(t.r);

  // Horner's rule for P(r), then 1 + r + r²·P(r).
  constant(EXP_POLY[0]);
  for (const coefficient of EXP_POLY.slice(1)) {
    f.get(t.r).f32x4Mul();
    constant(coefficient).f32x4Add();
  }
  f.get(t.r).get(t.r).f32x4Mul().f32x4Mul().get(t.r).f32x4Add();
  constant(1).f32x4Add().set(t.poly);

  // 2ⁿ as float32 bits: shifted + 127 has the bits of 1.5·2²³ plus n + 127 in its low mantissa
  // bits, and a left shift by 23 moves n + 127 into the exponent and drops the rest.
  f.get(t.poly).get(t.shifted);
  constant(127).f32x4Add().i32Const(23).i32x4Shl();
  f.f32x4Mul();

  // 0 below EXP_LOW (NaN compares false, so it stays NaN), +Infinity past overflow.
  f.get(x);
  constant(EXP_LOW).f32x4Lt().v128AndNot().set(t.poly);
  constant(Infinity).get(t.poly).get(x);
  constant(EXP_OVERFLOW).f32x4Gt().v128Bitselect();
}

/**
 * Builds a function of `inputs` source addresses, one destination address and a vector count
 * that maps each 4-float vector of the sources through `body` to the destination. `setup` runs
 * once before the loop and returns what `body` needs. `body` receives that and the v128 locals
 * holding the current source vectors, and pushes the result.
 */
function buildMap<State>(
  inputs: number,
  setup: (f: FunctionBuilder) => State,
  body: (f: FunctionBuilder, values: number[], state: State) => void,
): FunctionBuilder {
  // Parameters: the source addresses, the destination address, then the vector count.
  const params: ValueType[] = Array.from({ length: inputs + 2 }, () => I32);
  const f = new FunctionBuilder(params);
  const count = inputs + 1;
  const offset = f.local(I32);
  const end = f.local(I32);
  const values = Array.from({ length: inputs }, () => f.local(V128));
  const result = f.local(V128);
  const state = setup(f);

  f.i32Const(0).set(offset);
  f.get(count).i32Const(16).i32Mul().set(end);
  f.loop();
  for (let i = 0; i < inputs; i++) f.get(i).get(offset).i32Add().v128Load(0).set(values[i]);
  body(f, values, state);
  f.set(result);
  f.get(inputs).get(offset).i32Add().get(result).v128Store(0);
  f.get(offset).i32Const(16).i32Add().tee(offset).get(end).i32LtU().brIf(0);
  f.end();
  return f;
}

/** exp(x). */
function buildExp(): FunctionBuilder {
  return buildMap(1, expLocals, (f, [x], scratch) => emitExp(f, x, scratch));
}

/** GELU: x / (1 + exp(−2u)) with u = C·(x + 0.044715·x³), which is 0.5·x·(1 + tanh(u)). */
function buildGelu(): FunctionBuilder {
  const setup = (f: FunctionBuilder) => ({
    scratch: expLocals(f, GELU_CONSTANTS),
    w: f.local(V128),
  });
  return buildMap(1, setup, (f, [x], { scratch, w }) => {
    emitGeluExponent(f, x, w, scratch);
    emitExp(f, w, scratch);
    pushConstant(f, scratch, 1).f32x4Add().set(w);
    f.get(x).get(w).f32x4Div();
  });
}

/** Constants of the GELU kernels beyond those of the exp. */
const GELU_CONSTANTS = [
  -2 * GELU_C * GELU_CUBIC,
  -2 * GELU_C,
  3 * GELU_C * GELU_CUBIC,
  GELU_C,
  2,
  FLT_MAX,
];

/** Sets local `w` to −2u = x·(−2C − 2C·0.044715·x²). */
function emitGeluExponent(f: FunctionBuilder, x: number, w: number, t: ExpLocals): void {
  f.get(x).get(x).f32x4Mul();
  pushConstant(f, t, -2 * GELU_C * GELU_CUBIC).f32x4Mul();
  pushConstant(f, t, -2 * GELU_C).f32x4Add().get(x).f32x4Mul().set(w);
}

/**
 * dx = dy · (s + x · 2·s·(1 − s) · du/dx) with e = exp(−2u), s = 1 / (1 + e) and
 * du/dx = C·(1 + 3·0.044715·x²). It uses s·(1 − s) = e·s², which does not cancel when s is near 1.
 */
function buildGeluBackward(): FunctionBuilder {
  const setup = (f: FunctionBuilder) => ({
    scratch: expLocals(f, GELU_CONSTANTS),
    e: f.local(V128),
    s: f.local(V128),
  });
  return buildMap(2, setup, (f, [x, dy], { scratch, e, s }) => {
    const constant = (value: number) => pushConstant(f, scratch, value);

    // e is capped at FLT_MAX, so for x below about −9.5 e·s² underflows to 0 instead of giving
    // Infinity · 0 = NaN.
    emitGeluExponent(f, x, e, scratch);
    emitExp(f, e, scratch);
    constant(FLT_MAX).f32x4Pmin().set(e);
    constant(1);
    constant(1).get(e).f32x4Add().f32x4Div().set(s);

    // e·s² first, so in the far tails it is 0 (or tiny) before the large x and du/dx multiply it.
    f.get(e).get(s).f32x4Mul().get(s).f32x4Mul().get(x).f32x4Mul();
    f.get(x).get(x).f32x4Mul();
    constant(3 * GELU_C * GELU_CUBIC).f32x4Mul();
    constant(GELU_C).f32x4Add().f32x4Mul();
    constant(2).f32x4Mul().get(s).f32x4Add();
    f.get(dy).f32x4Mul();
  });
}

/**
 * softmaxRows(x, y, rows, width): the softmax of each of `rows` rows of `width` floats (a multiple
 * of 4) from x into y, which may be the same address. A lane of −Infinity is a hidden column and
 * gives 0. Each row takes its max, then exp(x − max) summed in 4 float32 lanes, then a product
 * with 1 / sum. A row that is all −Infinity gives NaN, so the caller must not pass one.
 */
function buildSoftmaxRows(): FunctionBuilder {
  const [x, y, rows, width] = [0, 1, 2, 3];
  const f = new FunctionBuilder([I32, I32, I32, I32]);
  const row = f.local(I32);
  const offset = f.local(I32);
  const rowBytes = f.local(I32);
  const xRow = f.local(I32);
  const yRow = f.local(I32);
  const lanes = f.local(V128);
  const shift = f.local(V128);
  const value = f.local(V128);
  const scratch = expLocals(f);

  /** Opens a loop over the byte offsets of one row; `closeRowLoop` ends it. */
  const openRowLoop = () => f.i32Const(0).set(offset).loop();
  const closeRowLoop = () => {
    f.get(offset).i32Const(16).i32Add().tee(offset).get(rowBytes).i32LtU().brIf(0);
    f.end();
  };
  /** Reduces the four lanes of `lanes` to one f32 with `combine`, as (l0 ∘ l1) ∘ (l2 ∘ l3). */
  const horizontal = (combine: () => void) => {
    f.get(lanes).f32x4ExtractLane(0).get(lanes).f32x4ExtractLane(1);
    combine();
    f.get(lanes).f32x4ExtractLane(2).get(lanes).f32x4ExtractLane(3);
    combine();
    combine();
  };

  f.get(width).i32Const(4).i32Mul().set(rowBytes);
  f.i32Const(0).set(row);
  f.get(x).set(xRow);
  f.get(y).set(yRow);
  f.loop();

  f.f32x4Const(-Infinity).set(lanes);
  openRowLoop();
  f.get(lanes).get(xRow).get(offset).i32Add().v128Load(0).f32x4Max().set(lanes);
  closeRowLoop();
  horizontal(() => f.f32Max());
  f.f32x4Splat().set(shift);

  f.f32x4Const(0).set(lanes);
  openRowLoop();
  f.get(xRow).get(offset).i32Add().v128Load(0).get(shift).f32x4Sub().set(value);
  emitExp(f, value, scratch);
  f.set(value);
  f.get(yRow).get(offset).i32Add().get(value).v128Store(0);
  f.get(lanes).get(value).f32x4Add().set(lanes);
  closeRowLoop();
  f.f32Const(1);
  horizontal(() => f.f32Add());
  f.f32Div().f32x4Splat().set(shift);

  openRowLoop();
  f.get(yRow).get(offset).i32Add();
  f.get(yRow).get(offset).i32Add().v128Load(0).get(shift).f32x4Mul();
  f.v128Store(0);
  closeRowLoop();

  f.get(xRow).get(rowBytes).i32Add().set(xRow);
  f.get(yRow).get(rowBytes).i32Add().set(yRow);
  f.get(row).i32Const(1).i32Add().tee(row).get(rows).i32LtU().brIf(0);
  f.end();
  return f;
}

/**
 * Encodes the module exporting `exp(x, y, vectors)`, `gelu(x, y, vectors)` and
 * `geluBackward(x, dy, dx, vectors)` and `softmaxRows(x, y, rows, width)`.
 */
export function encodeExpModule(memory: MemoryImport): Uint8Array<ArrayBuffer> {
  return encodeModule(memory, [
    { name: "exp", body: buildExp() },
    { name: "gelu", body: buildGelu() },
    { name: "geluBackward", body: buildGeluBackward() },
    { name: "softmaxRows", body: buildSoftmaxRows() },
  ]);
}
