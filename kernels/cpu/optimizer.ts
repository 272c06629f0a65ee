/** Fused optimizer ops: squared norm, clipping coefficient and the AdamW step. */

import type { AdamWSpec, Storage } from "../backend.ts";
import type { CpuMemory } from "./storage.ts";

/** Added to the norm before dividing, so a zero gradient norm gives a coefficient of 1. */
const CLIP_EPS = 1e-6;

export function sumSquares(mem: CpuMemory, x: Storage): Storage {
  const xd = mem.floats("sumSquares", "x", x, x.size);

  let sum = 0;
  for (let i = 0; i < xd.length; i++) sum += xd[i] * xd[i];

  const out = mem.allocFloat(1);
  out.data[0] = sum;
  return out;
}

/** min(1, maxNorm / (sqrt(normSq) + 1e-6)). */
export function clipCoefficient(mem: CpuMemory, normSq: Storage, maxNorm: number): Storage {
  const op = "clipCoefficient";
  if (!(maxNorm > 0)) {
    throw new Error(`${op}: maxNorm is ${maxNorm} but must be a positive number`);
  }
  const nd = mem.floats(op, "normSq", normSq, 1);

  const out = mem.allocFloat(1);
  out.data[0] = Math.min(1, maxNorm / (Math.sqrt(nd[0]) + CLIP_EPS));
  return out;
}

/** Throws unless every AdamW hyperparameter is finite and step is an integer ≥ 1. */
export function checkAdamWSpec(op: string, spec: AdamWSpec): void {
  const { lr, beta1, beta2, eps, weightDecay, step } = spec;
  for (const [name, value] of Object.entries({ lr, beta1, beta2, eps, weightDecay })) {
    if (!Number.isFinite(value)) {
      throw new Error(`${op}: ${name} is ${value} but must be a finite number`);
    }
  }
  if (!Number.isInteger(step) || step < 1) {
    throw new Error(`${op}: step is ${step} but must be an integer ≥ 1 (it counts from 1)`);
  }
}

/**
 * Applies one AdamW step in place. Per element, in this order:
 * - g = grad · gradScale
 * - p −= lr · wd · p (decoupled weight decay)
 * - m = β1 · m + (1 − β1) · g and v = β2 · v + (1 − β2) · g²
 * - p −= lr · m̂ / (sqrt(v̂) + eps), with m̂ = m / (1 − β1^step) and v̂ = v / (1 − β2^step)
 */
export function adamw(
  mem: CpuMemory,
  param: Storage,
  grad: Storage,
  m: Storage,
  v: Storage,
  gradScale: Storage | null,
  spec: AdamWSpec,
): void {
  const op = "adamw";
  checkAdamWSpec(op, spec);
  const pd = mem.floats(op, "param", param, param.size);
  const gd = mem.floats(op, "grad", grad, pd.length);
  const md = mem.floats(op, "m", m, pd.length);
  const vd = mem.floats(op, "v", v, pd.length);
  const scale = gradScale === null ? 1 : mem.floats(op, "gradScale", gradScale, 1)[0];

  const { lr, beta1, beta2, eps, weightDecay, step } = spec;
  const correction1 = 1 - beta1 ** step;
  const correction2 = 1 - beta2 ** step;
  for (let i = 0; i < pd.length; i++) {
    const g = gd[i] * scale;
    let p = pd[i] - lr * weightDecay * pd[i];

    md[i] = beta1 * md[i] + (1 - beta1) * g;
    vd[i] = beta2 * vd[i] + (1 - beta2) * g * g;
    const mHat = md[i] / correction1;
    const vHat = vd[i] / correction2;
    p -= lr * mHat / (Math.sqrt(vHat) + eps);
    pd[i] = p;
  }
}

/** Muon's momentum step in place; returns the Nesterov or plain direction (see Backend). */
export function muonMomentum(
  mem: CpuMemory,
  m: Storage,
  grad: Storage,
  gradScale: Storage | null,
  momentum: number,
  nesterov: boolean,
): Storage {
  const op = "muonMomentum";
  if (!Number.isFinite(momentum)) {
    throw new Error(`${op}: momentum is ${momentum} but must be a finite number`);
  }
  const md = mem.floats(op, "m", m, m.size);
  const gd = mem.floats(op, "grad", grad, md.length);
  const scale = gradScale === null ? 1 : mem.floats(op, "gradScale", gradScale, 1)[0];
  const out = mem.allocFloat(md.length);
  for (let i = 0; i < md.length; i++) {
    const g = gd[i] * scale;
    md[i] = momentum * md[i] + g;
    out.data[i] = nesterov ? g + momentum * md[i] : md[i];
  }
  return out;
}
