/**
 * The numbers of a report. Per arm (and sweep point) and metric, it gives the final and best values
 * as mean ± std over seeds and Welch's t-test of the final value against the baseline arm. Each
 * claim is marked held, not held or inconclusive.
 */

import type { Claim } from "../plan.ts";
import { equivalenceTest, mean, sampleStd, type WelchResult, welchTTest } from "../stats.ts";
import type { CsvRows, ExperimentResults, RunResult } from "./load.ts";

/** The significance level of every test in a report. */
export const ALPHA = 0.05;

/** Mean and sample std over seeds; std is NaN for one seed. */
export interface Spread {
  mean: number;
  std: number;
  values: number[];
}

/** One metric of one group. */
export interface MetricSummary {
  final: Spread;
  best: Spread;
  /** Final value against the baseline arm at the same sweep point; absent for the baseline. */
  vsBaseline?: WelchResult;
}

/** One row of a report: an arm, or an arm at one sweep point. */
export interface GroupSummary {
  group: string;
  arm: string;
  point: number;
  planned: number;
  completed: number;
  failed: number;
  metrics: Record<string, MetricSummary>;
}

export type ClaimStatus = "held" | "not held" | "inconclusive";

/** A claim checked at one sweep point. */
export interface ClaimResult {
  claim: Claim;
  /** The two groups compared. */
  group: string;
  vsGroup: string;
  status: ClaimStatus;
  armMean: number;
  vsMean: number;
  /** The p-value that decided the status: two-sided Welch for lower/higher, TOST for equal. */
  p: number;
  reason: string;
}

/** True when a smaller value of the metric is better (its name contains "loss"). */
export function lowerIsBetter(metric: string): boolean {
  return metric.includes("loss");
}

/** Returns the last finite value of a metrics column; NaN when it has none. */
export function finalValue(rows: CsvRows, metric: string): number {
  for (let i = rows.length - 1; i >= 0; i--) {
    const value = rows[i][metric];
    if (typeof value === "number" && Number.isFinite(value)) return value;
  }
  return NaN;
}

/** Returns the best finite value of a metrics column (minimum or maximum, see `lowerIsBetter`). */
export function bestValue(rows: CsvRows, metric: string): number {
  const values = rows.map((row) => row[metric]).filter((value): value is number =>
    typeof value === "number" && Number.isFinite(value)
  );
  if (values.length === 0) return NaN;
  return lowerIsBetter(metric) ? Math.min(...values) : Math.max(...values);
}

/**
 * Returns the first logged step at which a metric reached `target` (at or below it for losses, at
 * or above otherwise); NaN when it never did.
 */
export function stepsToTarget(rows: CsvRows, metric: string, target: number): number {
  for (const row of rows) {
    const value = row[metric];
    if (typeof value !== "number" || !Number.isFinite(value)) continue;
    const reached = lowerIsBetter(metric) ? value <= target : value >= target;
    if (reached) return Number(row.step);
  }
  return NaN;
}

/** Summarizes every group on each of `metrics`. */
export function summarizeGroups(results: ExperimentResults, metrics: string[]): GroupSummary[] {
  const summaries = results.groups.map(({ group, arm, point }) => {
    const runs = results.runs.filter((run) => run.group === group);
    const completed = runs.filter((run) => run.status === "completed");
    const summary: GroupSummary = {
      group,
      arm,
      point,
      planned: runs.length,
      completed: completed.length,
      failed: runs.filter((run) => run.status === "failed").length,
      metrics: {},
    };
    for (const metric of metrics) {
      summary.metrics[metric] = {
        final: spread(completed, (run) => finalValue(run.metrics, metric)),
        best: spread(completed, (run) => bestValue(run.metrics, metric)),
      };
    }
    return summary;
  });

  for (const summary of summaries) {
    if (summary.arm === results.baseline) continue;
    const baseline = summaries.find((s) => s.arm === results.baseline && s.point === summary.point);
    if (baseline === undefined) continue;
    for (const metric of metrics) {
      summary.metrics[metric].vsBaseline = welchTTest(
        summary.metrics[metric].final.values,
        baseline.metrics[metric].final.values,
      );
    }
  }
  return summaries;
}

/** Checks every claim at every sweep point. */
export function checkClaims(results: ExperimentResults): ClaimResult[] {
  const checked: ClaimResult[] = [];
  const points = [...new Set(results.groups.map((g) => g.point))];

  for (const claim of results.claims) {
    for (const point of points) {
      const armGroup = results.groups.find((g) => g.arm === claim.arm && g.point === point);
      const vsGroup = results.groups.find((g) => g.arm === claim.vs && g.point === point);
      if (armGroup === undefined || vsGroup === undefined) continue;

      const values = (group: string) =>
        spread(
          results.runs.filter((run) => run.group === group && run.status === "completed"),
          (run) =>
            claim.at === "best"
              ? bestValue(run.metrics, claim.metric)
              : finalValue(run.metrics, claim.metric),
        ).values;
      checked.push({
        ...decide(claim, values(armGroup.group), values(vsGroup.group)),
        claim,
        group: armGroup.group,
        vsGroup: vsGroup.group,
      });
    }
  }
  return checked;
}

/** Decides one claim from the per-seed values of the two arms. */
export function decide(
  claim: Claim,
  armValues: number[],
  vsValues: number[],
): Pick<ClaimResult, "status" | "armMean" | "vsMean" | "p" | "reason"> {
  const armMean = mean(armValues);
  const vsMean = mean(vsValues);
  const counts = `${armValues.length} vs ${vsValues.length} completed seeds`;

  if (claim.expect === "equal") {
    const margin = claim.within ?? 0;
    const { pEquivalent, pOutside } = equivalenceTest(armValues, vsValues, margin);
    if (Number.isNaN(pEquivalent)) {
      return {
        status: "inconclusive",
        armMean,
        vsMean,
        p: NaN,
        reason: `too few values (${counts})`,
      };
    }
    if (pEquivalent < ALPHA) {
      return {
        status: "held",
        armMean,
        vsMean,
        p: pEquivalent,
        reason: `the difference is within ±${margin} (TOST p = ${formatP(pEquivalent)})`,
      };
    }
    if (pOutside < ALPHA) {
      return {
        status: "not held",
        armMean,
        vsMean,
        p: pOutside,
        reason: `the difference exceeds ±${margin} (one-sided p = ${formatP(pOutside)})`,
      };
    }
    return {
      status: "inconclusive",
      armMean,
      vsMean,
      p: pEquivalent,
      reason: `neither within nor beyond ±${margin} at p < ${ALPHA} (${counts})`,
    };
  }

  const { p } = welchTTest(armValues, vsValues);
  if (Number.isNaN(p)) {
    return { status: "inconclusive", armMean, vsMean, p, reason: `too few values (${counts})` };
  }
  if (p >= ALPHA) {
    return { status: "inconclusive", armMean, vsMean, p, reason: `no significant difference` };
  }
  const isLower = armMean < vsMean;
  const held = (claim.expect === "lower") === isLower;
  return {
    status: held ? "held" : "not held",
    armMean,
    vsMean,
    p,
    reason: `${claim.arm} is significantly ${isLower ? "lower" : "higher"}`,
  };
}

/** Formats a p-value: four decimals, or "< 1e-4". */
export function formatP(p: number): string {
  if (Number.isNaN(p)) return "—";
  return p < 1e-4 ? "< 1e-4" : p.toFixed(4);
}

function spread(runs: RunResult[], value: (run: RunResult) => number): Spread {
  const values = runs.map(value).filter((v) => !Number.isNaN(v));
  return { mean: mean(values), std: sampleStd(values), values };
}
