import assert from "node:assert/strict";
import { createCpuBackend } from "../../kernels/cpu/backend.ts";
import { GroupedOptimizer } from "../../optim/grouped.ts";
import { muonScale, newtonSchulz } from "../../optim/muon.ts";
import type { MuonGroupOptions } from "../../optim/optimizer.ts";
import { muonMomentum } from "../../optim/schedule.ts";
import { Rng, Tensor, transpose } from "../../tensor/mod.ts";

const backend = createCpuBackend({ precision: "f64", poison: true });

const OPTIONS: MuonGroupOptions = {
  algorithm: "muon",
  lr: 1,
  weightDecay: 0,
  momentum: 0.9,
  nesterov: false,
  nsSteps: 5,
  scaleRule: "original",
  momentumWarmup: null,
};

function randomTensor(rng: Rng, shape: number[]): Tensor {
  return Tensor.fromArray(backend, rng.normalArray(shape.reduce((p, d) => p * d, 1)), shape);
}

function parameter(shape: number[], values?: number[]): Tensor {
  const size = shape.reduce((p, d) => p * d, 1);
  const p = Tensor.fromArray(backend, values ?? new Array(size).fill(0), shape);
  p.requiresGrad = true;
  p.persistent = true;
  return p;
}

function setGrad(p: Tensor, grad: Tensor): void {
  p.grad?.dispose();
  p.grad = grad;
  grad.persistent = true;
}

async function values(t: Tensor): Promise<number[]> {
  return [...await t.data()];
}

function maxAbsDifference(a: number[], b: number[]): number {
  assert.equal(a.length, b.length);
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

/** Eigenvalues of a symmetric matrix by cyclic Jacobi rotations, in float64. */
function symmetricEigenvalues(matrix: number[][]): number[] {
  const a = matrix.map((row) => [...row]);
  const n = a.length;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p][q] ** 2;
    if (off < 1e-30) break;

    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        if (Math.abs(a[p][q]) < 1e-300) continue;
        const theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k][p];
          const akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p][k];
          const aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
      }
    }
  }
  return a.map((row, i) => row[i]).sort((x, y) => x - y);
}

/** Singular values of a rows×cols matrix: square roots of the eigenvalues of the smaller Gram matrix. */
function singularValues(data: number[], rows: number, cols: number): number[] {
  const small = Math.min(rows, cols);
  const at = (r: number, c: number) => data[r * cols + c];
  const gram = Array.from({ length: small }, (_, i) =>
    Array.from({ length: small }, (_, j) => {
      let sum = 0;
      if (rows <= cols) { for (let k = 0; k < cols; k++) sum += at(i, k) * at(j, k); }
      else for (let k = 0; k < rows; k++) sum += at(k, i) * at(k, j);
      return sum;
    }));
  return symmetricEigenvalues(gram).map((l) => Math.sqrt(Math.max(0, l)));
}

Deno.test("jacobi eigenvalues known matrix", () => {
  const eigenvalues = symmetricEigenvalues([[2, 1, 0], [1, 2, 0], [0, 0, 5]]);

  assert.ok(maxAbsDifference(eigenvalues, [1, 3, 5]) < 1e-12, `got ${eigenvalues}`);
});

Deno.test("newtonSchulz singular values in band", async () => {
  const rng = new Rng(11);
  for (const [rows, cols] of [[8, 8], [16, 5], [5, 16], [32, 12], [12, 32], [1, 7], [7, 1]]) {
    const x = randomTensor(rng, [rows, cols]);

    const sv = singularValues(await values(newtonSchulz(x)), rows, cols);

    // The quintic coefficients trade exact orthogonality for speed: singular values land in about
    // [0.5, 1.5] rather than at 1.
    assert.ok(sv[0] >= 0.5, `[${rows}, ${cols}]: smallest singular value ${sv[0]}`);
    assert.ok(
      sv[sv.length - 1] <= 1.5,
      `[${rows}, ${cols}]: largest singular value ${sv[sv.length - 1]}`,
    );
  }
});

Deno.test("newtonSchulz maps each singular value", async () => {
  // O = U·p(Σ)·Vᵀ, where p is the quintic applied five times to σ/‖X‖_F. A square random matrix
  // has singular values far below ‖X‖_F, which five steps cannot lift into the band.
  const [a, b, c] = [3.4445, -4.775, 2.0315];
  const rng = new Rng(12);
  for (const [rows, cols] of [[24, 24], [9, 20], [20, 9]]) {
    const x = randomTensor(rng, [rows, cols]);
    const input = await values(x);
    const norm = Math.sqrt(input.reduce((sum, v) => sum + v * v, 0)) + 1e-7;

    const expected = singularValues(input, rows, cols)
      .map((sigma) => {
        let s = sigma / norm;
        for (let i = 0; i < 5; i++) s = a * s + b * s ** 3 + c * s ** 5;
        return s;
      })
      .sort((p, q) => p - q);
    const actual = singularValues(await values(newtonSchulz(x)), rows, cols);

    assert.ok(
      maxAbsDifference(actual, expected) < 1e-9,
      `[${rows}, ${cols}]: ${actual} vs ${expected}`,
    );
  }
});

Deno.test("newtonSchulz zero steps normalises", async () => {
  const x = Tensor.fromArray(backend, [3, 0, 0, 4], [2, 2]);

  const y = await values(newtonSchulz(x, { steps: 0 }));

  assert.ok(maxAbsDifference(y, [3 / (5 + 1e-7), 0, 0, 4 / (5 + 1e-7)]) < 1e-15, `got ${y}`);
});

Deno.test("newtonSchulz transposed input", async () => {
  const x = randomTensor(new Rng(3), [10, 4]);

  const direct = await values(transpose(newtonSchulz(x), 0, 1));
  const viaTranspose = await values(newtonSchulz(transpose(x, 0, 1)));

  assert.ok(maxAbsDifference(direct, viaTranspose) < 1e-12);
});

Deno.test("newtonSchulz stack of matrices", async () => {
  const rng = new Rng(4);
  const first = randomTensor(rng, [3, 5]);
  const second = randomTensor(rng, [3, 5]);
  const stacked = Tensor.fromArray(backend, [...await values(first), ...await values(second)], [
    2,
    3,
    5,
  ]);

  const together = await values(newtonSchulz(stacked));
  const separate = [...await values(newtonSchulz(first)), ...await values(newtonSchulz(second))];

  assert.ok(maxAbsDifference(together, separate) < 1e-12);
});

Deno.test("newtonSchulz rejects vector", () => {
  assert.throws(() => newtonSchulz(Tensor.fromArray(backend, [1, 2], [2])), /needs rank ≥ 2/);
});

Deno.test("muonScale both rules", () => {
  assert.equal(muonScale(6, 3, "original"), Math.sqrt(2));
  assert.equal(muonScale(3, 6, "original"), 1);
  assert.equal(muonScale(6, 3, "matchRmsAdamW"), 0.2 * Math.sqrt(6));
  assert.equal(muonScale(3, 6, "matchRmsAdamW"), 0.2 * Math.sqrt(6));
});

for (const scaleRule of ["original", "matchRmsAdamW"] as const) {
  for (const shape of [[6, 3], [3, 6]]) {
    Deno.test(`muon update scale ${scaleRule} [${shape}]`, async () => {
      const w = parameter(shape);
      const grad = randomTensor(new Rng(5), shape);
      const optimizer = new GroupedOptimizer([{
        name: "m",
        params: new Map([["w", w]]),
        options: { ...OPTIONS, scaleRule },
      }]);
      setGrad(w, grad);

      optimizer.update(1, null);

      // From W = 0 with lr 1 and no decay, the first update is −scale·NS(G).
      const s = muonScale(shape[0], shape[1], scaleRule);
      const expected = (await values(newtonSchulz(grad))).map((v) => -s * v);
      assert.ok(maxAbsDifference(await values(w), expected) < 1e-12);
    });
  }
}

Deno.test("muon matchRmsAdamW update RMS near 0.2", async () => {
  const w = parameter([64, 16]);
  const optimizer = new GroupedOptimizer([
    { name: "m", params: new Map([["w", w]]), options: { ...OPTIONS, scaleRule: "matchRmsAdamW" } },
  ]);
  setGrad(w, randomTensor(new Rng(6), [64, 16]));

  optimizer.update(1, null);

  // Singular values near 1 make the RMS about 0.2·√max(A, B)·√(min/(A·B)) = 0.2.
  const update = await values(w);
  const rms = Math.sqrt(update.reduce((sum, v) => sum + v * v, 0) / update.length);
  assert.ok(rms > 0.15, `RMS ${rms}`);
  assert.ok(rms < 0.25, `RMS ${rms}`);
});

Deno.test("muon nesterov momentum two steps", async () => {
  const rng = new Rng(7);
  const shape = [4, 6];
  const g1 = randomTensor(rng, shape);
  const g2 = randomTensor(rng, shape);
  // setGrad disposes the previous gradient, so read both first.
  const [a, b] = [await values(g1), await values(g2)];
  const w = parameter(shape);
  const options = { ...OPTIONS, lr: 0.1, nesterov: true, momentum: 0.9 };
  const optimizer = new GroupedOptimizer([{ name: "m", params: new Map([["w", w]]), options }]);

  setGrad(w, g1);
  optimizer.update(1, null);
  const afterFirst = await values(w);
  setGrad(w, g2);
  optimizer.update(1, null);

  // M₂ = μ·G₁ + G₂ and U₂ = G₂ + μ·M₂.
  const m2 = a.map((v, i) => 0.9 * v + b[i]);
  const u2 = Tensor.fromArray(backend, b.map((v, i) => v + 0.9 * m2[i]), shape);
  const step = await values(newtonSchulz(u2));
  const expected = afterFirst.map((v, i) => v - 0.1 * step[i]);
  assert.ok(maxAbsDifference(await values(w), expected) < 1e-12);
  assert.ok(
    maxAbsDifference(await values(optimizer.stateTensors().get("muon.momentum.w")!), m2) < 1e-15,
  );
});

Deno.test("muon decoupled weight decay", async () => {
  const rng = new Rng(8);
  const shape = [5, 5];
  const initial = [...rng.normalArray(25)];
  const w = parameter(shape, initial);
  const grad = randomTensor(rng, shape);
  const options = { ...OPTIONS, lr: 0.02, weightDecay: 0.5 };
  const optimizer = new GroupedOptimizer([{ name: "m", params: new Map([["w", w]]), options }]);
  setGrad(w, grad);

  optimizer.update(0.5, null);

  // η = 0.02·0.5; W ← W·(1 − η·λ) − η·NS(G), decay at the unscaled lr.
  const eta = 0.01;
  const o = await values(newtonSchulz(grad));
  const expected = initial.map((v, i) => v * (1 - eta * 0.5) - eta * o[i]);
  assert.ok(maxAbsDifference(await values(w), expected) < 1e-12);
});

Deno.test("muon momentum warm-up by step", async () => {
  const rng = new Rng(9);
  const shape = [3, 4];
  const g1 = randomTensor(rng, shape);
  const g2 = randomTensor(rng, shape);
  // setGrad disposes the previous gradient, so read both first.
  const [a, b] = [await values(g1), await values(g2)];
  const w = parameter(shape);
  const warmup = { start: 0.85, warmupSteps: 300 };
  const options = { ...OPTIONS, momentum: 0.95, momentumWarmup: warmup };
  const optimizer = new GroupedOptimizer([{ name: "m", params: new Map([["w", w]]), options }]);

  setGrad(w, g1);
  optimizer.update(1, null);
  setGrad(w, g2);
  optimizer.update(1, null);

  // The second update is step index 1 of the warm-up.
  const mu = muonMomentum(1, { ...warmup, end: 0.95 });
  const expected = a.map((v, i) => mu * v + b[i]);
  assert.ok(
    maxAbsDifference(await values(optimizer.stateTensors().get("muon.momentum.w")!), expected) <
      1e-15,
  );
});

Deno.test("muon rejects vector parameter", () => {
  const bias = parameter([4]);

  assert.throws(
    () =>
      new GroupedOptimizer([{
        name: "hidden",
        params: new Map([["blocks.0.mlp.up.bias", bias]]),
        options: OPTIONS,
      }]),
    /group "hidden" sends blocks\.0\.mlp\.up\.bias \[4\] to Muon/,
  );
});

Deno.test("muon update releases intermediates", () => {
  const w = parameter([6, 4]);
  const optimizer = new GroupedOptimizer([{
    name: "m",
    params: new Map([["w", w]]),
    options: { ...OPTIONS, nesterov: true },
  }]);
  setGrad(w, randomTensor(new Rng(10), [6, 4]));
  const scale = Tensor.fromArray(backend, [0.5], [1]);
  const before = backend.liveStorages();

  optimizer.update(1, scale);

  assert.equal(backend.liveStorages(), before);
});
