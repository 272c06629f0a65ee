/**
 * report.html: the report's tables and interactive charts in one static file that loads nothing
 * from the network. chart.js's UMD build is inlined from node_modules.
 *
 * After drawing, the page writes "charts drawn: N/M" into the element #moelab-status, and
 * "error: ..." when a script error or console.error occurred, so a headless browser can check it.
 */

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { ChartConfig } from "../chart_configs.ts";
import { UserError } from "../errors.ts";
import type { ReportChart } from "./charts.ts";
import type { ReportTable } from "./tables.ts";

/** Renders the report page. */
export async function renderHtml(
  title: string,
  intro: string[],
  tables: ReportTable[],
  charts: ReportChart[],
): Promise<string> {
  const chartJs = await readChartJs();
  const specs = charts.map((chart) => ({
    id: chart.name,
    width: chart.width,
    height: chart.height,
    config: chart.config satisfies ChartConfig,
  }));

  const body = [
    `<h1>${escapeHtml(title)}</h1>`,
    ...intro.map((line) => `<p>${escapeHtml(line)}</p>`),
    ...tables.map(renderTable),
    charts.length ? "<h2>Charts</h2>" : "",
    ...charts.map((chart) =>
      `<div class="chart"><canvas id="${escapeHtml(chart.name)}" width="${chart.width}" ` +
      `height="${chart.height}"></canvas></div>`
    ),
    `<p id="moelab-status">charts not drawn: scripts did not run</p>`,
  ].join("\n");

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font-family: "DejaVu Sans", sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
.note { color: #555; max-width: 60em; }
.chart { margin: 1em 0; }
</style>
</head>
<body>
${body}
<script>${scriptText(chartJs)}</script>
<script>
${scriptText(PAGE_SCRIPT)}
drawCharts(${jsonForScript(specs)});
</script>
</body>
</html>
`;
}

// Draws each chart, hides band datasets from legends (as finishChartConfig does in Deno) and
// reports the outcome in #moelab-status.
const PAGE_SCRIPT = `
const moelabErrors = [];
window.addEventListener("error", (event) => moelabErrors.push(String(event.message)));
const consoleError = console.error.bind(console);
console.error = (...args) => { moelabErrors.push(args.map(String).join(" ")); consoleError(...args); };

function drawCharts(specs) {
  const status = document.getElementById("moelab-status");
  let drawn = 0;
  for (const spec of specs) {
    try {
      const config = spec.config;
      config.options.plugins = config.options.plugins || {};
      const legend = config.options.plugins.legend || {};
      legend.labels = Object.assign({}, legend.labels, {
        filter: (item) => !config.data.datasets[item.datasetIndex].moelabBand,
      });
      config.options.plugins.legend = legend;
      config.plugins = [{ id: "moelabDrawn", afterRender: (chart) => { chart.moelabDrawn = true; } }];
      const chart = new Chart(document.getElementById(spec.id), config);
      if (chart.moelabDrawn) drawn++;
    } catch (error) {
      moelabErrors.push(spec.id + ": " + error.message);
    }
  }
  status.textContent = moelabErrors.length
    ? "error: " + moelabErrors.join("; ")
    : "charts drawn: " + drawn + "/" + specs.length;
}
`;

async function readChartJs(): Promise<string> {
  const require = createRequire(import.meta.url);
  try {
    // The package's exports map hides dist/ files, so resolve the entry point and look beside it.
    const entry = require.resolve("chart.js");
    return await Deno.readTextFile(join(dirname(entry), "chart.umd.min.js"));
  } catch (error) {
    throw new UserError(
      `cannot read chart.js's UMD build for report.html (${String(error)}); run npm ci in the ` +
        `repository root`,
      { cause: error },
    );
  }
}

function renderTable(table: ReportTable): string {
  const head = table.header.map((cell) => `<th>${escapeHtml(cell)}</th>`).join("");
  const rows = table.rows.map((row) =>
    `<tr>${row.map((cell) => `<td>${escapeHtml(cell)}</td>`).join("")}</tr>`
  );
  return [
    `<h2>${escapeHtml(table.title)}</h2>`,
    table.note ? `<p class="note">${escapeHtml(table.note)}</p>` : "",
    `<table><thead><tr>${head}</tr></thead><tbody>`,
    ...rows,
    "</tbody></table>",
  ].join("\n");
}

function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

/** JSON that cannot end the script element it sits in. */
function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replaceAll("<", "\\u003c");
}

/** Script text with any "</script" broken up, so it cannot end its element. */
function scriptText(text: string): string {
  return text.replaceAll("</script", "<\\/script");
}
