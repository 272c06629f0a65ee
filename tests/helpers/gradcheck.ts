/**
 * Finite-difference gradient checks on the float64 CPU backend.
 *
 * The op's output is reduced to a scalar through a fixed random projection, so every output
 * element's gradient matters; each input element is then perturbed by ±h and the central
 * difference is compared with the analytic gradient.
 */

import assert from "node:assert/strict";
import type { Backend } from "../../kernels/backend.ts";
import { backward, mul, noGrad, Rng, sumAll, Tensor, withScope } from "../../tensor/mod.ts";

export interface GradcheckInput {
  shape: number[];
  /** Values to use instead of random normals (for ops with a restricted domain). */
  values?: Float64Array;
  /** Whether the check covers this input's gradient (default true). */
  differentiable?: boolean;
}

export async function gradcheck(
  backend: Backend,
  name: string,
  inputs: GradcheckInput[],
  fn: (...xs: Tensor[]) => Tensor,
  options: { seed?: number; h?: number; tolerance?: number } = {},
): Promise<void> {
  const rng = new Rng(options.seed ?? 7);
  const h = options.h ?? 1e-6;
  const tolerance = options.tolerance ?? 1e-6;
  const values = inputs.map((input) =>
    input.values ?? rng.normalArray(input.shape.reduce((a, b) => a * b, 1))
  );

  const upload = (vals: Float64Array[]) =>
    vals.map((v, i) => {
      const t = Tensor.fromArray(backend, v, inputs[i].shape, "f32");
      t.requiresGrad = inputs[i].differentiable ?? true;
      return t;
    });

  // Fix the projection by running the op once.
  const probe = withScope(() => noGrad(() => fn(...upload(values))).shape);
  const projection = rng.normalArray(probe.reduce((a, b) => a * b, 1));

  const objective = (xs: Tensor[]) =>
    sumAll(mul(fn(...xs), Tensor.fromArray(backend, projection, probe, "f32")));

  const analytic = await withScope(() => {
    const xs = upload(values);
    backward(objective(xs));
    return xs.map((x) => x.grad);
  }) as (Tensor | null)[];
  const analyticValues = await Promise.all(analytic.map((g) => g?.data()));
  analytic.forEach((g) => g?.dispose());

  for (let i = 0; i < inputs.length; i++) {
    if (inputs[i].differentiable === false) continue;
    const grad = analyticValues[i];
    assert.ok(grad !== undefined, `${name}: input ${i} received no gradient`);
    for (let j = 0; j < values[i].length; j++) {
      const evaluate = async (delta: number) => {
        const shifted = values.map((v) => v.slice());
        shifted[i][j] += delta;
        const out = withScope(() => noGrad(() => objective(upload(shifted))));
        const value = await out.item();
        out.dispose();
        return value;
      };
      const numeric = ((await evaluate(h)) - (await evaluate(-h))) / (2 * h);
      const error = Math.abs(numeric - grad[j]) / Math.max(1, Math.abs(numeric));
      assert.ok(
        error <= tolerance,
        `${name}: d/dx${i}[${j}] analytic ${grad[j]} vs numeric ${numeric} (error ${
          error.toExponential(2)
        })`,
      );
    }
  }
}
