/**
 * Line plots as PNG files, drawn by chart.js on an @napi-rs/canvas canvas.
 *
 * @napi-rs/canvas ships prebuilt binaries in its npm package, so no native build or system cairo
 * is needed. The canvas may find no system fonts, so the DejaVu Sans font from the
 * `dejavu-fonts-ttf` npm package is registered once. Without it, text may render as boxes.
 *
 * Example:
 * ```ts
 * await plotLines("results/x/run/plots/loss.png", {
 *   title: "loss", xLabel: "step", yLabel: "loss",
 *   series: [{ label: "train", points: [{ x: 1, y: 5.5 }, { x: 2, y: 4.9 }] }],
 * });
 * ```
 */

import { createRequire } from "node:module";
import { createCanvas, GlobalFonts } from "@napi-rs/canvas";
import { Chart, type ChartConfiguration, registerables } from "chart.js";
import { type ChartConfig, finishChartConfig } from "./chart_configs.ts";
import { UserError } from "./errors.ts";

/** One line of a plot. Points with a non-finite `y` are drawn as gaps. */
export interface PlotSeries {
  label: string;
  points: { x: number; y: number }[];
}

/** Options for `plotLines`. */
export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: PlotSeries[];
  /** Width in pixels (default 800). */
  width?: number;
  /** Height in pixels (default 500). */
  height?: number;
}

const FONT_FAMILY = "DejaVu Sans";

// Colour-blind-safe qualitative palette (Okabe and Ito, "Color Universal Design", 2002).
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];

let setupDone = false;

/** Draws the series as a line chart with linear axes and writes it to `path` as a PNG. */
export async function plotLines(path: string, options: PlotOptions): Promise<void> {
  setupChart();

  const width = options.width ?? 800;
  const height = options.height ?? 500;
  const canvas = createCanvas(width, height);

  const chart = new Chart(canvas as unknown as HTMLCanvasElement, {
    type: "line",
    data: {
      datasets: options.series.map((series, i) => ({
        label: series.label,
        // chart.js leaves a gap at a null value, while Infinity would stretch the axis.
        data: series.points.map(({ x, y }) => ({ x, y: Number.isFinite(y) ? y : null })),
        borderColor: PALETTE[i % PALETTE.length],
        backgroundColor: PALETTE[i % PALETTE.length],
        borderWidth: 2,
        // Markers only on short series, where a single point would otherwise not show.
        pointRadius: series.points.length < 30 ? 3 : 0,
      })),
    },
    options: {
      responsive: false,
      animation: false,
      devicePixelRatio: 1,
      plugins: {
        title: { display: true, text: options.title, font: { size: 16 } },
        legend: { display: options.series.length > 1 },
      },
      scales: {
        // Steps are whole numbers.
        x: {
          type: "linear",
          ticks: { precision: 0 },
          title: { display: true, text: options.xLabel },
        },
        y: { type: "linear", title: { display: true, text: options.yLabel } },
      },
    },
    plugins: [whiteBackground],
  });

  try {
    const png = await canvas.encode("png");
    await Deno.writeFile(path, png);
  } finally {
    chart.destroy();
  }
}

/**
 * Draws a chart.js configuration from chart_configs.ts (band lines, heatmaps) and writes it to
 * `path` as a PNG of `width` × `height` pixels (default 800 × 500).
 */
export async function plotChart(
  path: string,
  config: ChartConfig,
  size: { width?: number; height?: number } = {},
): Promise<void> {
  setupChart();

  const canvas = createCanvas(size.width ?? 800, size.height ?? 500);
  const finished = finishChartConfig(structuredClone(config));
  finished.options.devicePixelRatio = 1;
  const chart = new Chart(canvas as unknown as HTMLCanvasElement, {
    ...finished,
    plugins: [whiteBackground],
  } as unknown as ChartConfiguration);

  try {
    await Deno.writeFile(path, await canvas.encode("png"));
  } finally {
    chart.destroy();
  }
}

/** Paints the canvas white before the chart, because a PNG is transparent by default. */
const whiteBackground = {
  id: "whiteBackground",
  beforeDraw(chart: Chart) {
    const context = chart.ctx;
    context.save();
    context.fillStyle = "white";
    context.fillRect(0, 0, chart.width, chart.height);
    context.restore();
  },
};

function setupChart(): void {
  if (setupDone) return;

  Chart.register(...registerables);
  GlobalFonts.registerFromPath(resolveFontPath(), FONT_FAMILY);
  Chart.defaults.font.family = FONT_FAMILY;
  setupDone = true;
}

function resolveFontPath(): string {
  const require = createRequire(import.meta.url);
  try {
    return require.resolve("dejavu-fonts-ttf/ttf/DejaVuSans.ttf");
  } catch (error) {
    throw new UserError(
      "the npm package dejavu-fonts-ttf, which provides the plot font, is not installed; run " +
        "npm ci in the repository root",
      { cause: error },
    );
  }
}
