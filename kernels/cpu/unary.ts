/** Unary elementwise ops and their exact derivatives. */

import type { Storage, UnaryOp } from "../backend.ts";
import type { CpuMemory } from "./storage.ts";

/** sqrt(2/π), the constant of the tanh approximation of GELU used by GPT-2. */
const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_CUBIC = 0.044715;

const PARAM_OPS: ReadonlySet<UnaryOp> = new Set(["pow", "scale", "addScalar"]);

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

function forwardFn(op: UnaryOp, p: number): (x: number) => number {
  switch (op) {
    case "neg":
      return (x) => -x;
    case "exp":
      return Math.exp;
    case "log":
      return Math.log;
    case "sqrt":
      return Math.sqrt;
    case "rsqrt":
      return (x) => 1 / Math.sqrt(x);
    case "tanh":
      return Math.tanh;
    case "relu":
      return (x) => (x > 0 ? x : 0);
    case "gelu":
      return (x) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + GELU_CUBIC * x * x * x)));
    case "silu":
      return (x) => x * sigmoid(x);
    case "sigmoid":
      return sigmoid;
    case "square":
      return (x) => x * x;
    case "pow":
      return (x) => x ** p;
    case "scale":
      return (x) => x * p;
    case "addScalar":
      return (x) => x + p;
  }
  throw new Error(`unary: op ${String(op)} is not supported; see UnaryOp for the valid ops`);
}

/** d unary(op, x) / dx as a function of x. */
function derivativeFn(op: UnaryOp, p: number): (x: number) => number {
  switch (op) {
    case "neg":
      return () => -1;
    case "exp":
      return Math.exp;
    case "log":
      return (x) => 1 / x;
    case "sqrt":
      return (x) => 0.5 / Math.sqrt(x);
    case "rsqrt":
      return (x) => -0.5 / (x * Math.sqrt(x));
    case "tanh":
      return (x) => {
        const t = Math.tanh(x);
        return 1 - t * t;
      };
    // The derivative at 0 is taken as 0.
    case "relu":
      return (x) => (x > 0 ? 1 : 0);
    case "gelu":
      return geluDerivative;
    case "silu":
      return (x) => {
        const s = sigmoid(x);
        return s * (1 + x * (1 - s));
      };
    case "sigmoid":
      return (x) => {
        const s = sigmoid(x);
        return s * (1 - s);
      };
    case "square":
      return (x) => 2 * x;
    case "pow":
      return (x) => p * x ** (p - 1);
    case "scale":
      return () => p;
    case "addScalar":
      return () => 1;
  }
  throw new Error(
    `unaryBackward: op ${String(op)} is not supported; see UnaryOp for the valid ops`,
  );
}

/** Derivative of 0.5·x·(1 + tanh(u)) with u = c·(x + 0.044715·x³). */
function geluDerivative(x: number): number {
  const t = Math.tanh(GELU_C * (x + GELU_CUBIC * x * x * x));
  const du = GELU_C * (1 + 3 * GELU_CUBIC * x * x);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
}

function paramOf(opName: string, op: UnaryOp, param: number | undefined): number {
  if (!PARAM_OPS.has(op)) return 0;
  if (param === undefined || !Number.isFinite(param)) {
    throw new Error(`${opName} ${op}: param is ${param} but must be a finite number`);
  }
  return param;
}

export function unary(mem: CpuMemory, op: UnaryOp, x: Storage, param?: number): Storage {
  const f = forwardFn(op, paramOf("unary", op, param));
  const xd = mem.floats(`unary ${op}`, "x", x, x.size);

  const out = mem.allocFloat(xd.length);
  const yd = out.data;
  for (let i = 0; i < xd.length; i++) yd[i] = f(xd[i]);
  return out;
}

export function unaryBackward(
  mem: CpuMemory,
  op: UnaryOp,
  x: Storage,
  dy: Storage,
  param?: number,
): Storage {
  const df = derivativeFn(op, paramOf("unaryBackward", op, param));
  const name = `unaryBackward ${op}`;
  const xd = mem.floats(name, "x", x, x.size);
  const dyd = mem.floats(name, "dy", dy, xd.length);

  const out = mem.allocFloat(xd.length);
  const dxd = out.data;
  for (let i = 0; i < xd.length; i++) dxd[i] = dyd[i] * df(xd[i]);
  return out;
}
