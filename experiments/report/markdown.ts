/** report.md: the report's tables and links to its PNG plots. */

import type { ReportTable } from "./tables.ts";

/** Renders the report as Markdown; `plots` are paths relative to the report. */
export function renderMarkdown(
  title: string,
  intro: string[],
  tables: ReportTable[],
  plots: { title: string; path: string }[],
): string {
  const lines = [`# ${title}`, "", ...intro, ""];

  for (const table of tables) {
    lines.push(`## ${table.title}`, "");
    if (table.note) lines.push(table.note, "");
    lines.push(`| ${table.header.map(escapeCell).join(" | ")} |`);
    lines.push(`| ${table.header.map(() => "---").join(" | ")} |`);
    for (const row of table.rows) lines.push(`| ${row.map(escapeCell).join(" | ")} |`);
    lines.push("");
  }

  if (plots.length > 0) {
    lines.push("## Plots", "");
    for (const plot of plots) lines.push(`![${plot.title}](${plot.path})`, "");
  }
  return lines.join("\n");
}

function escapeCell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}
