/**
 * LayerNorm and RMSNorm over rows of length `cols`, with their backward passes. Parameter
 * gradients sum over rows in row order, so they are reproducible.
 */

import type { Storage } from "../backend.ts";
import { checkCount, type CpuMemory } from "./storage.ts";

/** Throws unless rows and cols are counts and eps, when given, is a non-negative number. */
export function checkNormSizes(op: string, rows: number, cols: number, eps?: number): void {
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  if (eps !== undefined && !(eps >= 0)) {
    throw new Error(`${op}: eps is ${eps} but must be a non-negative number`);
  }
}

/** y = (x − mean) / sqrt(var + eps) ⊙ gamma + beta, with the biased variance as in PyTorch. */
export function layerNorm(
  mem: CpuMemory,
  x: Storage,
  gamma: Storage,
  beta: Storage,
  rows: number,
  cols: number,
  eps: number,
): { y: Storage; mean: Storage; rstd: Storage } {
  const op = "layerNorm";
  checkNormSizes(op, rows, cols, eps);
  const xd = mem.floats(op, "x", x, rows * cols);
  const gd = mem.floats(op, "gamma", gamma, cols);
  const bd = mem.floats(op, "beta", beta, cols);

  const y = mem.allocFloat(rows * cols);
  const mean = mem.allocFloat(rows);
  const rstd = mem.allocFloat(rows);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += xd[start + c];
    const mu = sum / cols;

    let squares = 0;
    for (let c = 0; c < cols; c++) squares += (xd[start + c] - mu) ** 2;
    const inv = 1 / Math.sqrt(squares / cols + eps);

    for (let c = 0; c < cols; c++) {
      y.data[start + c] = (xd[start + c] - mu) * inv * gd[c] + bd[c];
    }
    mean.data[r] = mu;
    rstd.data[r] = inv;
  }
  return { y, mean, rstd };
}

/** dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)) with g = dy ⊙ gamma and x̂ the normalized x. */
export function layerNormBackward(
  mem: CpuMemory,
  x: Storage,
  gamma: Storage,
  mean: Storage,
  rstd: Storage,
  dy: Storage,
  rows: number,
  cols: number,
): { dx: Storage; dgamma: Storage; dbeta: Storage } {
  const op = "layerNormBackward";
  checkNormSizes(op, rows, cols);
  const xd = mem.floats(op, "x", x, rows * cols);
  const gd = mem.floats(op, "gamma", gamma, cols);
  const meand = mem.floats(op, "mean", mean, rows);
  const rstdd = mem.floats(op, "rstd", rstd, rows);
  const dyd = mem.floats(op, "dy", dy, rows * cols);

  const dx = mem.allocFloat(rows * cols);
  const dgammaSums = new Float64Array(cols);
  const dbetaSums = new Float64Array(cols);
  const xhat = new Float64Array(cols);
  const g = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    let gSum = 0;
    let gxSum = 0;
    for (let c = 0; c < cols; c++) {
      xhat[c] = (xd[start + c] - meand[r]) * rstdd[r];
      g[c] = dyd[start + c] * gd[c];
      gSum += g[c];
      gxSum += g[c] * xhat[c];
      dgammaSums[c] += dyd[start + c] * xhat[c];
      dbetaSums[c] += dyd[start + c];
    }

    const gMean = gSum / cols;
    const gxMean = gxSum / cols;
    for (let c = 0; c < cols; c++) {
      dx.data[start + c] = rstdd[r] * (g[c] - gMean - xhat[c] * gxMean);
    }
  }

  const dgamma = mem.allocFloat(cols);
  dgamma.data.set(dgammaSums);
  const dbeta = mem.allocFloat(cols);
  dbeta.data.set(dbetaSums);
  return { dx, dgamma, dbeta };
}

/** y = x / sqrt(mean(x²) + eps) ⊙ gamma. */
export function rmsNorm(
  mem: CpuMemory,
  x: Storage,
  gamma: Storage,
  rows: number,
  cols: number,
  eps: number,
): { y: Storage; rstd: Storage } {
  const op = "rmsNorm";
  checkNormSizes(op, rows, cols, eps);
  const xd = mem.floats(op, "x", x, rows * cols);
  const gd = mem.floats(op, "gamma", gamma, cols);

  const y = mem.allocFloat(rows * cols);
  const rstd = mem.allocFloat(rows);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    let squares = 0;
    for (let c = 0; c < cols; c++) squares += xd[start + c] * xd[start + c];
    const inv = 1 / Math.sqrt(squares / cols + eps);

    for (let c = 0; c < cols; c++) y.data[start + c] = xd[start + c] * inv * gd[c];
    rstd.data[r] = inv;
  }
  return { y, rstd };
}

/** dx = rstd · (g − x̂ · mean(g ⊙ x̂)) with g = dy ⊙ gamma and x̂ = x · rstd. */
export function rmsNormBackward(
  mem: CpuMemory,
  x: Storage,
  gamma: Storage,
  rstd: Storage,
  dy: Storage,
  rows: number,
  cols: number,
): { dx: Storage; dgamma: Storage } {
  const op = "rmsNormBackward";
  checkNormSizes(op, rows, cols);
  const xd = mem.floats(op, "x", x, rows * cols);
  const gd = mem.floats(op, "gamma", gamma, cols);
  const rstdd = mem.floats(op, "rstd", rstd, rows);
  const dyd = mem.floats(op, "dy", dy, rows * cols);

  const dx = mem.allocFloat(rows * cols);
  const dgammaSums = new Float64Array(cols);
  const xhat = new Float64Array(cols);
  const g = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    let gxSum = 0;
    for (let c = 0; c < cols; c++) {
      xhat[c] = xd[start + c] * rstdd[r];
      g[c] = dyd[start + c] * gd[c];
      gxSum += g[c] * xhat[c];
      dgammaSums[c] += dyd[start + c] * xhat[c];
    }

    const gxMean = gxSum / cols;
    for (let c = 0; c < cols; c++) {
      dx.data[start + c] = rstdd[r] * (g[c] - xhat[c] * gxMean);
    }
  }

  const dgamma = mem.allocFloat(cols);
  dgamma.data.set(dgammaSums);
  return { dx, dgamma };
}
