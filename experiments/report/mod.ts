/**
 * Experiment reports: `writeReport("results/<experiment>")` writes report.md, report.html and
 * plots/*.png into that folder from the runs on disk.
 */

import { join } from "node:path";
import { plotChart } from "../plot.ts";
import { type ReportChart, reportCharts } from "./charts.ts";
import { renderHtml } from "./html.ts";
import { type ExperimentResults, loadResults } from "./load.ts";
import { renderMarkdown } from "./markdown.ts";
import { checkClaims, type ClaimResult, type GroupSummary, summarizeGroups } from "./summarize.ts";
import { claimTable, metricTables, runTable, targetTable } from "./tables.ts";

export type { ExperimentResults } from "./load.ts";
export { loadResults } from "./load.ts";

/** The files that `writeReport` wrote and the numbers it computed. */
export interface ReportResult {
  markdownPath: string;
  htmlPath: string;
  plotPaths: string[];
  summaries: GroupSummary[];
  claims: ClaimResult[];
}

// Metrics that get a table, when the runs logged them; claimed metrics are added.
const TABLE_METRICS = ["val_loss", "train_loss"];

/**
 * Reads the results folder and writes report.md, report.html and plots/<chart>.png into it.
 * Each file is written under a temporary name and renamed, so a reader never sees half a report.
 */
export async function writeReport(folder: string): Promise<ReportResult> {
  const results = await loadResults(folder);
  const charts = reportCharts(results);
  const metrics = tableMetrics(results, charts);

  const summaries = summarizeGroups(results, metrics);
  const claims = checkClaims(results);
  const targets = targetTable(results);
  const tables = [
    ...(claims.length ? [claimTable(claims)] : []),
    ...(targets ? [targets] : []),
    ...metricTables(results, summaries, metrics),
    runTable(results, metrics),
  ];
  const title = `Report: ${results.experiment}`;
  const intro = introLines(results);

  const plotDir = join(folder, "plots");
  await Deno.mkdir(plotDir, { recursive: true });
  const plotPaths: string[] = [];
  for (const chart of charts) {
    const path = join(plotDir, `${chart.name}.png`);
    const temporary = `${path}.${Deno.pid}.tmp`;
    await plotChart(temporary, chart.config, chart);
    await Deno.rename(temporary, path);
    plotPaths.push(path);
  }

  const markdownPath = join(folder, "report.md");
  const plots = charts.map((chart) => ({
    title: chartTitle(chart),
    path: `plots/${chart.name}.png`,
  }));
  await writeAtomically(markdownPath, renderMarkdown(title, intro, tables, plots));
  const htmlPath = join(folder, "report.html");
  await writeAtomically(htmlPath, await renderHtml(title, intro, tables, charts));

  return { markdownPath, htmlPath, plotPaths, summaries, claims };
}

function tableMetrics(results: ExperimentResults, charts: ReportChart[]): string[] {
  const logged = new Set(charts.map((chart) => chart.name.replace(/^metric-/, "")));
  const metrics = TABLE_METRICS.filter((metric) => logged.has(metric));
  for (const claim of results.claims) {
    if (!metrics.includes(claim.metric)) metrics.push(claim.metric);
  }
  return metrics;
}

function introLines(results: ExperimentResults): string[] {
  const count = (status: string) => results.runs.filter((run) => run.status === status).length;
  return [
    `Generated ${new Date().toISOString()} from ${results.folder}.`,
    `${results.runs.length} runs planned: ${count("completed")} completed, ${count("failed")} ` +
    `failed, ${count("unfinished")} unfinished, ${count("missing")} not started. ` +
    `Baseline arm: ${results.baseline}.`,
  ];
}

function chartTitle(chart: ReportChart): string {
  const title = (chart.config.options.plugins as { title?: { text?: string } })?.title?.text;
  return title ?? chart.name;
}

async function writeAtomically(path: string, text: string): Promise<void> {
  const temporary = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(temporary, text);
  await Deno.rename(temporary, path);
}
