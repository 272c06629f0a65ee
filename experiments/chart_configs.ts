/**
 * chart.js configurations as plain JSON data, so one description draws a PNG in Deno
 * (plot.ts) and an interactive chart in report.html.
 *
 * Functions cannot travel as JSON, so the legend filter that hides band datasets is added by
 * `finishChartConfig` here and by the same few lines in the HTML page's script.
 */

/** A chart.js configuration that holds only JSON values. */
export type ChartConfig = {
  type: string;
  data: { datasets: Record<string, unknown>[] };
  options: Record<string, unknown>;
};

// Colour-blind-safe qualitative palette (Okabe and Ito, "Color Universal Design", 2002).
export const PALETTE = [
  "#0072B2",
  "#D55E00",
  "#009E73",
  "#CC79A7",
  "#E69F00",
  "#56B4E9",
  "#000000",
];

/** One line with a band: the mean and the min–max range over seeds at each x. */
export interface BandSeries {
  label: string;
  points: { x: number; mean: number; min: number; max: number }[];
}

/** Options for `bandChartConfig`. */
export interface BandChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: BandSeries[];
}

/** Builds a line chart of each series' mean, with its min–max range drawn as a translucent band. */
export function bandChartConfig(options: BandChartOptions): ChartConfig {
  const datasets: Record<string, unknown>[] = [];
  options.series.forEach((series, i) => {
    const color = PALETTE[i % PALETTE.length];
    const points = (key: "mean" | "min" | "max") =>
      series.points.map((p) => ({ x: p.x, y: Number.isFinite(p[key]) ? p[key] : null }));

    // chart.js fills a dataset to the one before it ("-1"), so min comes right before max.
    datasets.push({
      label: `${series.label} min`,
      data: points("min"),
      borderWidth: 0,
      pointRadius: 0,
      fill: false,
      moelabBand: true,
    });
    datasets.push({
      label: `${series.label} max`,
      data: points("max"),
      borderWidth: 0,
      pointRadius: 0,
      backgroundColor: `${color}33`,
      fill: "-1",
      moelabBand: true,
    });
    datasets.push({
      label: series.label,
      data: points("mean"),
      borderColor: color,
      backgroundColor: color,
      borderWidth: 2,
      // Markers only on short series, where a single point would otherwise not show.
      pointRadius: series.points.length < 30 ? 3 : 0,
      fill: false,
    });
  });

  return {
    type: "line",
    data: { datasets },
    options: {
      responsive: false,
      animation: false,
      plugins: {
        title: { display: true, text: options.title, font: { size: 16 } },
        legend: { display: true },
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
  };
}

/** Options for `heatmapChartConfig`. */
export interface HeatmapOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** One cell per (x, y); x and y are positions on linear axes, for example step and expert. */
  cells: { x: number; y: number; value: number }[];
  /** Canvas size in pixels, which sets the cell size. */
  width: number;
  height: number;
}

/**
 * Builds a heatmap as a scatter chart of square points coloured by value on the viridis scale, from the
 * minimum value (dark blue) to the maximum (yellow).
 */
export function heatmapChartConfig(options: HeatmapOptions): ChartConfig {
  const xs = [...new Set(options.cells.map((c) => c.x))].sort((a, b) => a - b);
  const ys = [...new Set(options.cells.map((c) => c.y))].sort((a, b) => a - b);
  const values = options.cells.map((c) => c.value).filter(Number.isFinite);
  const low = values.length ? Math.min(...values) : 0;
  const high = values.length ? Math.max(...values) : 1;

  // The axes take about 120 pixels; chart.js draws a "rect" point as a square of side radius·√2.
  const cellPixels = Math.min(
    (options.width - 120) / xs.length,
    (options.height - 120) / ys.length,
  );
  const radius = Math.max(1.5, cellPixels / Math.SQRT2);
  const spanX = xs.length > 1 ? (xs.at(-1)! - xs[0]) / (xs.length - 1) : 1;

  return {
    type: "scatter",
    data: {
      datasets: [{
        label: "value",
        data: options.cells.map((c) => ({ x: c.x, y: c.y, v: c.value })),
        pointStyle: "rect",
        pointRadius: radius,
        pointHoverRadius: radius,
        backgroundColor: options.cells.map((c) => viridis((c.value - low) / (high - low || 1))),
        borderWidth: 0,
      }],
    },
    options: {
      responsive: false,
      animation: false,
      plugins: {
        title: { display: true, text: options.title, font: { size: 16 } },
        subtitle: {
          display: true,
          text: `colour: ${formatTick(low)} (dark blue) to ${formatTick(high)} (yellow)`,
        },
        legend: { display: false },
      },
      scales: {
        x: {
          type: "linear",
          min: xs[0] - spanX / 2,
          max: (xs.at(-1) ?? 0) + spanX / 2,
          title: { display: true, text: options.xLabel },
        },
        y: {
          type: "linear",
          min: (ys[0] ?? 0) - 0.5,
          max: (ys.at(-1) ?? 0) + 0.5,
          // NOTE: chart.js still places these ticks at the half-integer bounds (-0.5, 0.5, ...),
          // so each expert's row sits between two labels; a tick callback would need a function.
          ticks: { stepSize: 1, includeBounds: false },
          title: { display: true, text: options.yLabel },
        },
      },
    },
  };
}

/** Adds what JSON cannot hold: the legend leaves out band datasets. Returns the same object. */
export function finishChartConfig(config: ChartConfig): ChartConfig {
  const plugins = (config.options.plugins ?? {}) as Record<string, Record<string, unknown>>;
  const legend = plugins.legend ?? {};
  legend.labels = {
    ...(legend.labels as Record<string, unknown> ?? {}),
    filter: (item: { datasetIndex: number }) =>
      !config.data.datasets[item.datasetIndex]?.moelabBand,
  };
  plugins.legend = legend;
  config.options.plugins = plugins;
  return config;
}

// Five stops of matplotlib's viridis colour map, interpolated linearly.
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

/** Returns the viridis colour for t in [0, 1] as a CSS rgb() string. */
export function viridis(t: number): string {
  const clamped = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
  const scaled = clamped * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(scaled));
  const f = scaled - i;
  const channel = (k: number) =>
    Math.round(VIRIDIS[i][k] + f * (VIRIDIS[i + 1][k] - VIRIDIS[i][k]));
  return `rgb(${channel(0)}, ${channel(1)}, ${channel(2)})`;
}

function formatTick(value: number): string {
  return Math.abs(value) >= 1e-3 || value === 0
    ? String(Number(value.toPrecision(3)))
    : value.toExponential(2);
}
