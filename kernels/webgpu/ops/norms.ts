/**
 * LayerNorm and RMSNorm over rows of length `cols`, with their backward passes.
 *
 * Row statistics use the workgroup-per-row reductions of `rows.ts`. Parameter gradients (dgamma,
 * dbeta) use one thread per column that loops over rows in order, so they are reproducible
 * without float atomics.
 */

import type { Storage } from "../../backend.ts";
import { checkCount } from "./checks.ts";
import { defineKernel, kernelCache, type KernelContext, ro, rw, threadGrid } from "./kernel.ts";
import { ROW_WG, rowGrid, type RowMode, rowMode, rowPrelude } from "./rows.ts";

const COLUMN_WG = 64;

function checkNormSizes(op: string, rows: number, cols: number, eps?: number): void {
  checkCount(op, "rows", rows);
  checkCount(op, "cols", cols);
  if (eps !== undefined && !(eps >= 0 && Number.isFinite(eps))) {
    throw new Error(`${op}: eps is ${eps} but must be a finite non-negative number`);
  }
}

const layerNormKernel = kernelCache((mode: RowMode) =>
  defineKernel({
    label: `layerNorm ${mode}`,
    workgroupSize: ROW_WG,
    buffers: [ro("x"), ro("gamma"), ro("beta"), rw("y"), rw("mean"), rw("rstd")],
    params: [["rows", "u32"], ["cols", "u32"], ["eps", "f32"]],
    body: `${rowPrelude(mode)}
  let count = f32(params.cols);
  var localSum = 0.0f;
  for (var c = lid; c < params.cols; c += STRIDE) { localSum += x[start + c]; }
  let mu = rowSum(lid, localSum) / count;

  // Two passes over the row: the biased variance of (x - mean), as in PyTorch.
  var localSquares = 0.0f;
  for (var c = lid; c < params.cols; c += STRIDE) {
    let d = x[start + c] - mu;
    localSquares += d * d;
  }
  let inv = 1.0f / sqrt(rowSum(lid, localSquares) / count + params.eps);

  if (!valid) { return; }
  for (var c = lid; c < params.cols; c += STRIDE) {
    y[start + c] = (x[start + c] - mu) * inv * gamma[c] + beta[c];
  }
  if (lid == 0u) {
    mean[r] = mu;
    rstd[r] = inv;
  }
}`,
  })
);

export function layerNorm(
  ctx: KernelContext,
  x: Storage,
  gamma: Storage,
  beta: Storage,
  rows: number,
  cols: number,
  eps: number,
): { y: Storage; mean: Storage; rstd: Storage } {
  const op = "layerNorm";
  checkNormSizes(op, rows, cols, eps);
  const xs = ctx.input(op, "x", x, rows * cols, "f32");
  const gammas = ctx.input(op, "gamma", gamma, cols, "f32");
  const betas = ctx.input(op, "beta", beta, cols, "f32");

  const y = ctx.output(rows * cols, "f32");
  const mean = ctx.output(rows, "f32");
  const rstd = ctx.output(rows, "f32");
  if (rows > 0) {
    ctx.dispatch(
      layerNormKernel(rowMode(cols)),
      [xs, gammas, betas, y, mean, rstd],
      [rows, cols, eps],
      rowGrid(rowMode(cols), rows),
    );
  }
  return { y, mean, rstd };
}

const rmsNormKernel = kernelCache((mode: RowMode) =>
  defineKernel({
    label: `rmsNorm ${mode}`,
    workgroupSize: ROW_WG,
    buffers: [ro("x"), ro("gamma"), rw("y"), rw("rstd")],
    params: [["rows", "u32"], ["cols", "u32"], ["eps", "f32"]],
    body: `${rowPrelude(mode)}
  var localSquares = 0.0f;
  for (var c = lid; c < params.cols; c += STRIDE) { localSquares += x[start + c] * x[start + c]; }
  let inv = 1.0f / sqrt(rowSum(lid, localSquares) / f32(params.cols) + params.eps);

  if (!valid) { return; }
  for (var c = lid; c < params.cols; c += STRIDE) { y[start + c] = x[start + c] * inv * gamma[c]; }
  if (lid == 0u) { rstd[r] = inv; }
}`,
  })
);

export function rmsNorm(
  ctx: KernelContext,
  x: Storage,
  gamma: Storage,
  rows: number,
  cols: number,
  eps: number,
): { y: Storage; rstd: Storage } {
  const op = "rmsNorm";
  checkNormSizes(op, rows, cols, eps);
  const xs = ctx.input(op, "x", x, rows * cols, "f32");
  const gammas = ctx.input(op, "gamma", gamma, cols, "f32");

  const y = ctx.output(rows * cols, "f32");
  const rstd = ctx.output(rows, "f32");
  if (rows > 0) {
    const mode = rowMode(cols);
    ctx.dispatch(
      rmsNormKernel(mode),
      [xs, gammas, y, rstd],
      [rows, cols, eps],
      rowGrid(mode, rows),
    );
  }
  return { y, rstd };
}

/**
 * dx of both norms: rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)) with g = dy ⊙ gamma. LayerNorm's x̂ is
 * (x − mean) · rstd; RMSNorm's is x · rstd and drops the mean(g) term.
 */
const normBackwardKernel = kernelCache((key: `${"layer" | "rms"} ${RowMode}`) => {
  const [kind, mode] = key.split(" ") as ["layer" | "rms", RowMode];
  const layer = kind === "layer";
  return defineKernel({
    label: `${kind}NormBackward dx`,
    workgroupSize: ROW_WG,
    buffers: layer
      ? [ro("x"), ro("gamma"), ro("mean"), ro("rstd"), ro("dy"), rw("dx")]
      : [ro("x"), ro("gamma"), ro("rstd"), ro("dy"), rw("dx")],
    params: [["rows", "u32"], ["cols", "u32"]],
    body: `${rowPrelude(mode)}
  let count = f32(params.cols);
  let inv = rstd[r];
  let mu = ${layer ? "mean[r]" : "0.0f"};
  var localG = 0.0f;
  var localGx = 0.0f;
  for (var c = lid; c < params.cols; c += STRIDE) {
    let g = dy[start + c] * gamma[c];
    localG += g;
    localGx += g * (x[start + c] - mu) * inv;
  }
  let gMean = ${layer ? "rowSum(lid, localG) / count" : "0.0f"};
  let gxMean = rowSum(lid, localGx) / count;

  if (!valid) { return; }
  for (var c = lid; c < params.cols; c += STRIDE) {
    let g = dy[start + c] * gamma[c];
    let xhat = (x[start + c] - mu) * inv;
    dx[start + c] = inv * (g - gMean - xhat * gxMean);
  }
}`,
  });
});

/** dgamma[c] = Σ_r dy[r, c] · x̂[r, c] and (LayerNorm) dbeta[c] = Σ_r dy[r, c], rows in order. */
const normParamGradKernel = kernelCache((kind: "layer" | "rms") => {
  const layer = kind === "layer";
  return defineKernel({
    label: `${kind}NormBackward dgamma`,
    workgroupSize: COLUMN_WG,
    buffers: layer
      ? [ro("x"), ro("mean"), ro("rstd"), ro("dy"), rw("dgamma"), rw("dbeta")]
      : [ro("x"), ro("rstd"), ro("dy"), rw("dgamma")],
    params: [["rows", "u32"], ["cols", "u32"]],
    body: `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let c = flatThread(gid, nwg);
  if (c >= params.cols) { return; }
  var gammaSum = 0.0f;
  var betaSum = 0.0f;
  for (var r = 0u; r < params.rows; r++) {
    let i = r * params.cols + c;
    let xhat = (x[i] - ${layer ? "mean[r]" : "0.0f"}) * rstd[r];
    gammaSum += dy[i] * xhat;
    betaSum += dy[i];
  }
  dgamma[c] = gammaSum;${layer ? "\n  dbeta[c] = betaSum;" : ""}
}`,
  });
});

interface NormBackwardInputs {
  x: Storage;
  gamma: Storage;
  mean: Storage | null;
  rstd: Storage;
  dy: Storage;
}

/** Shared launcher of both backward passes; RMSNorm has no `mean` and no `dbeta`. */
function normBackward(
  ctx: KernelContext,
  kind: "layer" | "rms",
  inputs: NormBackwardInputs,
  rows: number,
  cols: number,
): { dx: Storage; dgamma: Storage; dbeta: Storage | null } {
  const op = `${kind}NormBackward`;
  checkNormSizes(op, rows, cols);
  const xs = ctx.input(op, "x", inputs.x, rows * cols, "f32");
  const gammas = ctx.input(op, "gamma", inputs.gamma, cols, "f32");
  const rstd = ctx.input(op, "rstd", inputs.rstd, rows, "f32");
  const mean = inputs.mean ? [ctx.input(op, "mean", inputs.mean, rows, "f32")] : [];
  const dys = ctx.input(op, "dy", inputs.dy, rows * cols, "f32");

  const dx = ctx.output(rows * cols, "f32");
  const dgamma = ctx.output(cols, "f32");
  const dbeta = kind === "layer" ? ctx.output(cols, "f32") : null;
  if (rows * cols > 0) {
    ctx.dispatch(
      normBackwardKernel(`${kind} ${rowMode(cols)}`),
      [xs, gammas, ...mean, rstd, dys, dx],
      [rows, cols],
      rowGrid(rowMode(cols), rows),
    );
  }
  if (cols > 0) {
    // With rows = 0 the loop is empty and the parameter gradients are 0.
    ctx.dispatch(
      normParamGradKernel(kind),
      [xs, ...mean, rstd, dys, dgamma, ...(dbeta ? [dbeta] : [])],
      [rows, cols],
      threadGrid(cols, COLUMN_WG),
    );
  }
  return { dx, dgamma, dbeta };
}

export function layerNormBackward(
  ctx: KernelContext,
  x: Storage,
  gamma: Storage,
  mean: Storage,
  rstd: Storage,
  dy: Storage,
  rows: number,
  cols: number,
): { dx: Storage; dgamma: Storage; dbeta: Storage } {
  const { dx, dgamma, dbeta } = normBackward(
    ctx,
    "layer",
    { x, gamma, mean, rstd, dy },
    rows,
    cols,
  );
  return { dx, dgamma, dbeta: dbeta! };
}

export function rmsNormBackward(
  ctx: KernelContext,
  x: Storage,
  gamma: Storage,
  rstd: Storage,
  dy: Storage,
  rows: number,
  cols: number,
): { dx: Storage; dgamma: Storage } {
  const { dx, dgamma } = normBackward(ctx, "rms", { x, gamma, mean: null, rstd, dy }, rows, cols);
  return { dx, dgamma };
}
