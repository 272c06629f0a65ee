/**
 * Statistics for comparing arms over seeds: mean, sample standard deviation, Welch's t-test and
 * the two one-sided tests (TOST) for equivalence, with the Student-t CDF computed from the
 * regularized incomplete beta function.
 *
 * The incomplete beta follows the continued fraction and modified Lentz evaluation given in
 * Press et al., "Numerical Recipes", 3rd ed., section 6.4; log-gamma uses the Lanczos
 * approximation with g = 7 and 9 coefficients.
 */

/** Arithmetic mean; NaN for an empty list. */
export function mean(values: number[]): number {
  if (values.length === 0) return NaN;
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}

/** Sample standard deviation (divides by n - 1); NaN for fewer than two values. */
export function sampleStd(values: number[]): number {
  if (values.length < 2) return NaN;
  const m = mean(values);
  const squares = values.reduce((sum, value) => sum + (value - m) ** 2, 0);
  return Math.sqrt(squares / (values.length - 1));
}

/** The result of Welch's t-test of mean(a) - mean(b). */
export interface WelchResult {
  /** mean(a) - mean(b). */
  difference: number;
  /** Standard error of the difference: sqrt(var(a)/n_a + var(b)/n_b). */
  standardError: number;
  t: number;
  /** Welch–Satterthwaite degrees of freedom. */
  df: number;
  /** Two-sided p-value. */
  p: number;
}

/**
 * Welch's unequal-variance t-test. Every field but `difference` is NaN when either sample has
 * fewer than two values or both have zero variance, because the test is then undefined.
 */
export function welchTTest(a: number[], b: number[]): WelchResult {
  const difference = mean(a) - mean(b);
  const undefinedResult = { difference, standardError: NaN, t: NaN, df: NaN, p: NaN };
  if (a.length < 2 || b.length < 2) return undefinedResult;

  const va = sampleStd(a) ** 2 / a.length;
  const vb = sampleStd(b) ** 2 / b.length;
  const standardError = Math.sqrt(va + vb);
  if (!(standardError > 0)) return undefinedResult;

  const t = difference / standardError;
  const df = (va + vb) ** 2 / (va ** 2 / (a.length - 1) + vb ** 2 / (b.length - 1));
  const p = 2 * studentTCdf(-Math.abs(t), df);
  return { difference, standardError, t, df, p };
}

/**
 * The two one-sided tests for |mean(a) - mean(b)| < margin. Returns `pEquivalent`, the larger of
 * the two one-sided p-values (small when the difference is inside the margin), and `pOutside`,
 * the smaller one-sided p-value that the difference lies beyond one end of the margin (small when
 * it is outside). Both are NaN when Welch's test is undefined.
 */
export function equivalenceTest(
  a: number[],
  b: number[],
  margin: number,
): { difference: number; pEquivalent: number; pOutside: number } {
  const { difference, standardError: se, df } = welchTTest(a, b);
  if (Number.isNaN(se)) return { difference, pEquivalent: NaN, pOutside: NaN };

  // H0: difference <= -margin, against difference > -margin.
  const pAboveLower = 1 - studentTCdf((difference + margin) / se, df);
  // H0: difference >= margin, against difference < margin.
  const pBelowUpper = studentTCdf((difference - margin) / se, df);
  // Evidence that the difference is beyond a margin end: the reversed one-sided tests.
  const pBeyondUpper = 1 - studentTCdf((difference - margin) / se, df);
  const pBeyondLower = studentTCdf((difference + margin) / se, df);

  return {
    difference,
    pEquivalent: Math.max(pAboveLower, pBelowUpper),
    pOutside: Math.min(pBeyondUpper, pBeyondLower),
  };
}

/** P(T <= t) for Student's t distribution with `df` > 0 degrees of freedom. */
export function studentTCdf(t: number, df: number): number {
  if (Number.isNaN(t) || !(df > 0)) return NaN;
  if (t === Infinity) return 1;
  if (t === -Infinity) return 0;

  // P(|T| >= |t|) = I_x(df/2, 1/2) with x = df / (df + t²).
  const x = df / (df + t * t);
  const tail = 0.5 * regularizedIncompleteBeta(x, df / 2, 0.5);
  return t > 0 ? 1 - tail : tail;
}

/** The regularized incomplete beta function I_x(a, b) for 0 <= x <= 1 and a, b > 0. */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (x < 0 || x > 1 || !(a > 0) || !(b > 0)) return NaN;
  if (x === 0) return 0;
  if (x === 1) return 1;

  const logFront = logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) +
    b * Math.log(1 - x);
  const front = Math.exp(logFront);

  // The continued fraction converges quickly for x < (a + 1) / (a + b + 2); otherwise use the
  // symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(x, a, b)) / a;
  return 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

/** ln Γ(z) for z > 0 (Lanczos, g = 7); relative error about 1e-15 in float64. */
export function logGamma(z: number): number {
  if (z < 0.5) {
    // Reflection: Γ(z) Γ(1 - z) = π / sin(πz).
    return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * z))) - logGamma(1 - z);
  }

  const x = z - 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) sum += LANCZOS[i] / (x + i);
  const t = x + LANCZOS_G + 0.5;
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(sum);
}

const LANCZOS_G = 7;
const LANCZOS = [
  0.99999999999980993,
  676.5203681218851,
  -1259.1392167224028,
  771.32342877765313,
  -176.61502916214059,
  12.507343278686905,
  -0.13857109526572012,
  9.9843695780195716e-6,
  1.5056327351493116e-7,
];

const MAX_ITERATIONS = 300;
const EPSILON = 1e-15;
const TINY = 1e-300;

/** The continued fraction for I_x(a, b), evaluated by the modified Lentz method. */
function betaContinuedFraction(x: number, a: number, b: number): number {
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < TINY) d = TINY;
  d = 1 / d;
  let h = d;

  for (let m = 1; m <= MAX_ITERATIONS; m++) {
    const m2 = 2 * m;

    // Even step: d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)).
    let coefficient = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + coefficient * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + coefficient / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    h *= d * c;

    // Odd step: d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)).
    coefficient = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + coefficient * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + coefficient / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    const delta = d * c;
    h *= delta;

    if (Math.abs(delta - 1) < EPSILON) return h;
  }
  // NOTE: not reached for the a = df/2, b = 1/2 that the t CDF uses with df up to 1e6.
  return h;
}
