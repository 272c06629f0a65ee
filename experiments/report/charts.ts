/**
 * The charts of a report, as JSON chart configurations: per metric, each arm's mean curve over
 * seeds with a min–max band; an expert-load heatmap and the routing fluctuation rate when runs
 * wrote routing.csv; the attention-sink rate when runs wrote attention.csv.
 */

import {
  bandChartConfig,
  type BandSeries,
  type ChartConfig,
  heatmapChartConfig,
} from "../chart_configs.ts";
import { mean } from "../stats.ts";
import type { CsvRows, ExperimentResults, RunResult } from "./load.ts";

/** One chart of a report. */
export interface ReportChart {
  /** File stem of the PNG, also the HTML element id. */
  name: string;
  config: ChartConfig;
  width: number;
  height: number;
}

const WIDTH = 800;
const HEIGHT = 500;

// metrics.csv columns that are not worth a chart: the x axis and the wall clock.
const SKIPPED_COLUMNS = new Set(["step", "elapsed_s"]);

/** Returns the numeric metrics.csv columns of the completed runs, in file order. */
export function metricColumns(results: ExperimentResults): string[] {
  const columns: string[] = [];
  for (const run of completedRuns(results)) {
    for (const row of run.metrics) {
      for (const [column, value] of Object.entries(row)) {
        if (SKIPPED_COLUMNS.has(column) || columns.includes(column)) continue;
        if (typeof value === "number") columns.push(column);
      }
    }
  }
  return columns;
}

/** Builds every chart the results have data for. */
export function reportCharts(results: ExperimentResults): ReportChart[] {
  const charts: ReportChart[] = [];

  for (const metric of metricColumns(results)) {
    const series = bandSeries(results, (run) => stepSeries(run.metrics, metric));
    charts.push(lineChart(`metric-${metric}`, `${results.experiment}: ${metric}`, metric, series));
  }

  const withRouting = completedRuns(results).filter((run) => run.routing?.length);
  if (withRouting.length > 0) {
    for (const [i, { group }] of results.groups.entries()) {
      const runs = withRouting.filter((run) => run.group === group);
      if (runs.length === 0) continue;
      charts.push({
        name: `routing-load-${i}`,
        config: heatmapChartConfig({
          title: `${group}: expert load (fraction of tokens, mean over layers and seeds)`,
          xLabel: "step",
          yLabel: "expert",
          cells: loadCells(runs),
          width: WIDTH,
          height: HEIGHT,
        }),
        width: WIDTH,
        height: HEIGHT,
      });
    }

    const hasFluctuation = withRouting.some((run) => "fluctuation" in (run.routing?.[0] ?? {}));
    if (hasFluctuation) {
      const series = bandSeries(results, (run) => perStepMean(run.routing, "fluctuation"));
      charts.push(lineChart(
        "routing-fluctuation",
        `${results.experiment}: routing fluctuation (tokens whose top-1 expert changed)`,
        "fraction of tokens",
        series,
      ));
    }
  }

  if (completedRuns(results).some((run) => run.attention?.length)) {
    const series = bandSeries(results, (run) => perStepMean(run.attention, "sink_rate"));
    charts.push(lineChart(
      "attention-sink",
      `${results.experiment}: attention-sink rate (mean over layers and heads)`,
      "fraction of attention on the first token",
      series,
    ));
  }

  return charts;
}

function lineChart(name: string, title: string, yLabel: string, series: BandSeries[]): ReportChart {
  return {
    name,
    config: bandChartConfig({ title, xLabel: "step", yLabel, series }),
    width: WIDTH,
    height: HEIGHT,
  };
}

function completedRuns(results: ExperimentResults): RunResult[] {
  return results.runs.filter((run) => run.status === "completed");
}

/**
 * Per group: at each step, the mean, min and max over the group's completed runs that have a
 * finite value there.
 */
function bandSeries(
  results: ExperimentResults,
  series: (run: RunResult) => Map<number, number>,
): BandSeries[] {
  const out: BandSeries[] = [];
  for (const { group } of results.groups) {
    const perRun = completedRuns(results).filter((run) => run.group === group).map(series);
    if (perRun.length === 0) continue;

    const steps = [...new Set(perRun.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
    const points = steps.map((step) => {
      const values = perRun.map((m) => m.get(step)).filter((v): v is number => v !== undefined);
      return { x: step, mean: mean(values), min: Math.min(...values), max: Math.max(...values) };
    });
    out.push({ label: group, points });
  }
  return out;
}

/** step → value for the rows of one run where the column is finite. */
function stepSeries(rows: CsvRows, column: string): Map<number, number> {
  const series = new Map<number, number>();
  for (const row of rows) {
    const step = row.step;
    const value = row[column];
    if (typeof step === "number" && typeof value === "number" && Number.isFinite(value)) {
      series.set(step, value);
    }
  }
  return series;
}

/** step → mean of a column over all rows of that step (layers, heads or experts). */
function perStepMean(rows: CsvRows | undefined, column: string): Map<number, number> {
  const sums = new Map<number, number[]>();
  for (const row of rows ?? []) {
    const value = row[column];
    if (typeof row.step !== "number" || typeof value !== "number" || !Number.isFinite(value)) {
      continue;
    }
    sums.set(row.step, [...(sums.get(row.step) ?? []), value]);
  }
  return new Map([...sums].map(([step, values]) => [step, mean(values)]));
}

/** (step, expert) → mean load over layers and runs. */
function loadCells(runs: RunResult[]): { x: number; y: number; value: number }[] {
  const cells = new Map<string, { x: number; y: number; values: number[] }>();
  for (const run of runs) {
    for (const row of run.routing ?? []) {
      const { step, expert, load } = row;
      if (typeof step !== "number" || typeof expert !== "number" || typeof load !== "number") {
        continue;
      }
      const key = `${step},${expert}`;
      const cell = cells.get(key) ?? { x: step, y: expert, values: [] };
      cell.values.push(load);
      cells.set(key, cell);
    }
  }
  return [...cells.values()].map(({ x, y, values }) => ({ x, y, value: mean(values) }));
}
