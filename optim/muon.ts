/**
 * Muon (Keller Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024): momentum
 * SGD whose update direction is replaced by an approximately orthogonal matrix from a quintic
 * Newton–Schulz iteration.
 *
 * Per weight W of shape [..., A, B] (stored [out, in], so A = rows = fan-out), at lr η and
 * weight decay λ:
 *   M ← μ·M + G;  U = G + μ·M (Nesterov) or U = M
 *   O = newtonSchulz(U), each trailing A×B matrix separately
 *   W ← W·(1 − η·λ) − η·scale(A, B)·O
 * This is the sum form of momentum (torch.optim.Muon, Moonlight). The EMA form of Keller Jordan's
 * current code differs only by the factor (1 − μ) on U, which the Frobenius normalisation removes.
 */

import {
  add,
  addScalar,
  div,
  matmul,
  noGrad,
  scale,
  sqrt,
  square,
  sub,
  sum,
  Tensor,
  withScope,
} from "../tensor/mod.ts";
import { assignInPlace } from "./_state.ts";
import type { MuonGroupOptions, MuonScaleRule, ParamUpdate } from "./optimizer.ts";
import { muonMomentum } from "./schedule.ts";

/**
 * Quintic coefficients (a, b, c) of X ← a·X + (b·G + c·G²)·X with G = X·Xᵀ, from Keller Jordan's
 * Muon. They maximise the slope at 0 rather than converge: after 5 steps, singular values of at
 * least 2e-3·‖X‖_F end in [0.68, 1.21] (a scalar check of the quintic), not at exactly 1. Smaller
 * ones, common in square random matrices, stay below that band.
 */
export const NS_COEFFICIENTS: readonly [number, number, number] = [3.4445, -4.775, 2.0315];

/** The state slots Muon keeps per parameter. */
export const MUON_SLOTS: readonly string[] = ["momentum"];

export interface NewtonSchulzOptions {
  /** Iterations (default 5). */
  steps?: number;
  coefficients?: readonly [number, number, number];
  /** Added to the Frobenius norm before dividing (default 1e-7). */
  eps?: number;
}

/**
 * Orthogonalises each trailing 2-D matrix of `x` ([..., A, B], rank ≥ 2) approximately: scales it
 * by 1/(‖X‖_F + eps), so every singular value is at most 1, then runs the quintic iteration. A
 * tall matrix (A > B) iterates on the B×B Gram matrix XᵀX with X ← a·X + X·(b·G + c·G²), which is
 * the transposed form of the wide case without materialising a transpose.
 *
 * Runs without gradients in its own scope; only the result survives.
 */
export function newtonSchulz(x: Tensor, options: NewtonSchulzOptions = {}): Tensor {
  const steps = options.steps ?? 5;
  const [a, b, c] = options.coefficients ?? NS_COEFFICIENTS;
  const eps = options.eps ?? 1e-7;
  if (x.rank < 2) {
    throw new Error(
      `newtonSchulz: ${x.describe()} needs rank ≥ 2 (a matrix or a stack of matrices)`,
    );
  }
  if (!Number.isInteger(steps) || steps < 0) {
    throw new Error(`newtonSchulz: steps is ${steps} but must be an integer ≥ 0`);
  }

  const rows = x.shape[x.rank - 2];
  const cols = x.shape[x.rank - 1];
  const tall = rows > cols;

  return withScope(() =>
    noGrad(() => {
      // Frobenius normalisation of each matrix of the stack.
      const flat = x.reshape([-1, rows * cols]);
      const norm = addScalar(sqrt(sum(square(flat), 1, true)), eps);
      let y = div(flat, norm).reshape(x.shape);

      for (let i = 0; i < steps; i++) {
        const current = y;
        y = withScope(() => {
          const gram = tall
            ? matmul(current, current, { transA: true })
            : matmul(current, current, { transB: true });
          const poly = add(scale(gram, b), scale(matmul(gram, gram), c));
          const product = tall ? matmul(current, poly) : matmul(poly, current);
          return add(scale(current, a), product);
        });
      }
      return y;
    })
  );
}

/** Returns the factor that scales the orthogonalised update of a rows×cols weight. */
export function muonScale(rows: number, cols: number, rule: MuonScaleRule): number {
  switch (rule) {
    case "original":
      return Math.sqrt(Math.max(1, rows / cols));
    case "matchRmsAdamW":
      return 0.2 * Math.sqrt(Math.max(rows, cols));
    default:
      throw new Error(`muon: unknown scaleRule "${rule}"; use original or matchRmsAdamW`);
  }
}

/** Applies one Muon step to one parameter in place (see the module comment for the update). */
export function muonUpdate(update: ParamUpdate, options: MuonGroupOptions): void {
  const { name, param, grad, state, lr, gradScale, step } = update;
  if (param.rank < 2) {
    throw new Error(
      `muon: parameter ${name} ${param.describe()} has rank ${param.rank}; Muon needs rank ≥ 2`,
    );
  }
  const buffer = state.get("momentum");
  if (buffer === undefined) throw new Error(`muon: parameter ${name} has no momentum buffer`);

  const momentum = options.momentumWarmup === null
    ? options.momentum
    : muonMomentum(step - 1, { ...options.momentumWarmup, end: options.momentum });
  const rows = param.shape[param.rank - 2];
  const cols = param.shape[param.rank - 1];

  withScope(() =>
    noGrad(() => {
      // One fused kernel updates the momentum buffer in place and returns the direction.
      const direction = Tensor.fromStorage(
        param.backend,
        param.backend.muonMomentum(
          buffer.storage,
          grad.storage,
          gradScale?.storage ?? null,
          momentum,
          options.nesterov,
        ),
        param.shape,
      );
      const orthogonal = newtonSchulz(direction, { steps: options.nsSteps });

      // Decoupled decay uses the unscaled lr; only the update is scaled by shape.
      const decayed = scale(param, 1 - lr * options.weightDecay);
      const next = sub(decayed, scale(orthogonal, lr * muonScale(rows, cols, options.scaleRule)));
      assignInPlace(param, next);
    })
  );
}
