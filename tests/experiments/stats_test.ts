import assert from "node:assert/strict";
import {
  equivalenceTest,
  logGamma,
  mean,
  regularizedIncompleteBeta,
  sampleStd,
  studentTCdf,
  welchTTest,
} from "../../experiments/stats.ts";

function assertClose(actual: number, expected: number, tolerance: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tolerance,
    `${what}: expected ${expected} ± ${tolerance}, got ${actual}`,
  );
}

Deno.test("mean and sample std", () => {
  assert.equal(mean([1, 2, 3, 4]), 2.5);
  assertClose(sampleStd([1, 2, 3, 4]), Math.sqrt(5 / 3), 1e-15, "std");
  assert.ok(Number.isNaN(sampleStd([1])));
});

Deno.test("logGamma integer and half values", () => {
  assertClose(logGamma(5), Math.log(24), 1e-13, "ln 4!");
  assertClose(logGamma(0.5), Math.log(Math.sqrt(Math.PI)), 1e-13, "ln Γ(1/2)");
});

Deno.test("incomplete beta closed forms", () => {
  // I_x(1, 1) = x and I_x(2, 1) = x².
  assertClose(regularizedIncompleteBeta(0.3, 1, 1), 0.3, 1e-14, "I_0.3(1,1)");
  assertClose(regularizedIncompleteBeta(0.7, 2, 1), 0.49, 1e-14, "I_0.7(2,1)");
});

Deno.test("student t cdf critical values", () => {
  // Two-sided 5% critical values from standard t tables.
  assertClose(studentTCdf(12.706204736, 1), 0.975, 1e-9, "df 1");
  assertClose(studentTCdf(2.776445105, 4), 0.975, 1e-9, "df 4");
  assertClose(studentTCdf(2.228138852, 10), 0.975, 1e-9, "df 10");
  assertClose(studentTCdf(1.959963985, 1e6), 0.975, 1e-5, "df 1e6");
  assert.equal(studentTCdf(0, 3), 0.5);
  assertClose(studentTCdf(-1, 1), 0.25, 1e-14, "Cauchy at -1");
});

Deno.test("welch known t and p", () => {
  // mean 2 vs 5, both variances 1, n 3: t = -3 / sqrt(2/3), df 4; p by numerical integration.
  const result = welchTTest([1, 2, 3], [4, 5, 6]);

  assertClose(result.t, -3.6742346141747673, 1e-12, "t");
  assertClose(result.df, 4, 1e-12, "df");
  assertClose(result.p, 0.02131164113, 1e-9, "p");
});

Deno.test("welch unequal variances df", () => {
  // var(a)/n = 1/3 and var(b)/n = 16/3 give df = (17/3)² / ((1/9 + 256/9) / 2).
  const result = welchTTest([1, 2, 3], [0, 4, 8]);

  assertClose(result.df, (17 / 3) ** 2 / ((1 / 9 + 256 / 9) / 2), 1e-12, "df");
});

Deno.test("welch undefined for one seed", () => {
  const result = welchTTest([1], [2, 3]);

  assert.ok(Number.isNaN(result.p));
  assert.equal(result.difference, -1.5);
});

Deno.test("equivalence inside and outside margin", () => {
  const a = [1.00, 1.01, 0.99, 1.00];
  const b = [1.00, 1.00, 1.01, 0.99];
  const inside = equivalenceTest(a, b, 0.1);
  const outside = equivalenceTest(a.map((x) => x + 1), b, 0.1);

  assert.ok(inside.pEquivalent < 0.05, `pEquivalent ${inside.pEquivalent}`);
  assert.ok(outside.pOutside < 0.05, `pOutside ${outside.pOutside}`);
  assert.ok(outside.pEquivalent > 0.5, `pEquivalent ${outside.pEquivalent}`);
});
