/** The tables of a report as rows of text, rendered by markdown.ts and html.ts. */

import { mean, sampleStd } from "../stats.ts";
import type { ExperimentResults } from "./load.ts";
import {
  ALPHA,
  type ClaimResult,
  finalValue,
  formatP,
  type GroupSummary,
  type Spread,
  stepsToTarget,
} from "./summarize.ts";

/** A table with a heading and an optional note under it. */
export interface ReportTable {
  title: string;
  note?: string;
  header: string[];
  rows: string[][];
}

/** Builds one table per metric: a row per arm with final and best values and the test against baseline. */
export function metricTables(
  results: ExperimentResults,
  summaries: GroupSummary[],
  metrics: string[],
): ReportTable[] {
  return metrics.map((metric) => ({
    title: metric,
    note:
      `final: the last logged value; best: the ${
        metric.includes("loss") ? "lowest" : "highest"
      } logged value. Mean ± sample std over completed seeds. Δ, t and p compare the final value ` +
      `with the baseline arm (${results.baseline}) by Welch's two-sided t-test.`,
    header: ["arm", "seeds", "final", "best", "Δ final", "t", "p"],
    rows: summaries.map((summary) => {
      const { final, best, vsBaseline } = summary.metrics[metric];
      const isBaseline = summary.arm === results.baseline;
      return [
        isBaseline ? `${summary.group} (baseline)` : summary.group,
        `${summary.completed}/${summary.planned}` +
        (summary.failed ? ` (${summary.failed} failed)` : ""),
        formatSpread(final),
        formatSpread(best),
        vsBaseline ? formatNumber(vsBaseline.difference) : "",
        vsBaseline ? formatNumber(vsBaseline.t) : "",
        vsBaseline ? formatP(vsBaseline.p) : "",
      ];
    }),
  }));
}

/**
 * Builds the table of steps to each target: per group, the mean ± std over the seeds that reached
 * it, and how many seeds did.
 */
export function targetTable(results: ExperimentResults): ReportTable | undefined {
  const targets = Object.entries(results.targets);
  if (targets.length === 0) return undefined;
  const groups = [...new Set(results.groups.map((g) => g.group))];
  return {
    title: "Steps to target",
    note: "The first logged step at which each metric reached its target (at or below for " +
      "losses). Mean ± sample std over the seeds that reached it; reached counts them.",
    header: ["arm", ...targets.flatMap(([metric, target]) => [`${metric} ≤ ${target}`, "reached"])],
    rows: groups.map((group) => {
      const runs = results.runs.filter((run) => run.group === group && run.status === "completed");
      const cells = targets.flatMap(([metric, target]) => {
        const steps = runs.map((run) => stepsToTarget(run.metrics, metric, target));
        const reached = steps.filter((step) => !Number.isNaN(step));
        const spread: Spread = { mean: mean(reached), std: sampleStd(reached), values: reached };
        return [formatSpread(spread), `${reached.length}/${runs.length}`];
      });
      return [group, ...cells];
    }),
  };
}

/** Builds the table of claims with their status. */
export function claimTable(claims: ClaimResult[]): ReportTable {
  return {
    title: "Claims",
    note: `held or not held: the test is significant at p < ${ALPHA}; inconclusive otherwise. ` +
      `expect equal uses two one-sided tests (TOST) with the claim's margin.`,
    header: ["claim", "result", "arm mean", "vs mean", "p", "reason"],
    rows: claims.map((result) => [
      describeClaim(result),
      result.status,
      formatNumber(result.armMean),
      formatNumber(result.vsMean),
      formatP(result.p),
      result.reason,
    ]),
  };
}

/** Builds the table of every planned run with its status and final metrics. */
export function runTable(results: ExperimentResults, metrics: string[]): ReportTable {
  return {
    title: "Runs",
    header: ["run", "arm", "seed", "status", ...metrics.map((m) => `final ${m}`)],
    rows: results.runs.map((run) => [
      run.id,
      run.group,
      String(run.seed),
      run.error ? `${run.status}: ${run.error}` : run.status,
      ...metrics.map((m) => formatNumber(finalValue(run.metrics, m))),
    ]),
  };
}

/** Formats a number with 4 decimals, or in exponent form when very small or large; "—" for NaN. */
export function formatNumber(value: number): string {
  if (Number.isNaN(value)) return "—";
  if (!Number.isFinite(value)) return String(value);
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) {
    return value.toExponential(3);
  }
  return value.toFixed(4);
}

function formatSpread(spread: Spread): string {
  if (spread.values.length === 0) return "—";
  if (spread.values.length === 1) return formatNumber(spread.mean);
  return `${formatNumber(spread.mean)} ± ${formatNumber(spread.std)}`;
}

function describeClaim(result: ClaimResult): string {
  const { claim } = result;
  const expectation = claim.expect === "equal" ? `equal within ±${claim.within}` : claim.expect;
  return `${claim.at} ${claim.metric}: ${result.group} ${expectation} vs ${result.vsGroup}`;
}
