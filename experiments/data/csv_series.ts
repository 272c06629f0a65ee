/**
 * Multivariate time series from CSV files laid out like the ETT benchmark files (Zhou et al.,
 * "Informer", 2021): a header row, a date column first, then numeric columns, one row per time
 * step in chronological order.
 *
 * Built-in series come from the npm package vega-datasets (3.2.1), read from its `data/` folder:
 * - `seattle-weather-hourly`: seattle-weather-hourly-normals.csv, 8 759 hourly rows of pressure,
 *   temperature and wind (hourly climate normals for one year).
 * - `seattle-weather`: seattle-weather.csv, 1 461 daily rows (2012–2015) of precipitation,
 *   temp_max, temp_min and wind; its text column `weather` is left out.
 * - `sp500`: sp500-2000.csv, 5 105 trading days (2000–2020) of open, high, low, close, adjclose
 *   and volume.
 */

import Papa from "papaparse";
import { UserError } from "../errors.ts";
import { packageFile } from "./npm_package.ts";

/** A series of `rows` time steps × `columns.length` values, row-major. */
export interface TimeSeries {
  /** The dataset name or file path, for the log. */
  source: string;
  dates: string[];
  columns: string[];
  values: Float64Array;
  rows: number;
}

/** The built-in vega-datasets series: file and numeric columns. */
export const VEGA_SERIES = {
  "seattle-weather-hourly": {
    file: "data/seattle-weather-hourly-normals.csv",
    columns: ["pressure", "temperature", "wind"],
  },
  "seattle-weather": {
    file: "data/seattle-weather.csv",
    columns: ["precipitation", "temp_max", "temp_min", "wind"],
  },
  "sp500": {
    file: "data/sp500-2000.csv",
    columns: ["open", "high", "low", "close", "adjclose", "volume"],
  },
} as const;

export type VegaSeriesName = keyof typeof VEGA_SERIES;

// papaparse 5.5 ships no type declarations, so these are the fields that parseSeriesCsv uses.
interface PapaParseResult {
  data: string[][];
  errors: { row?: number; message: string }[];
}

/** Reads a built-in series from vega-datasets; `columns` narrows the default columns. */
export async function loadVegaSeries(
  name: VegaSeriesName,
  columns: string[] = [],
): Promise<TimeSeries> {
  const entry = VEGA_SERIES[name];
  const path = packageFile("vega-datasets", entry.file, `the ${name} series`);
  const text = await Deno.readTextFile(path);
  return parseSeriesCsv(
    text,
    `${name} (vega-datasets ${entry.file})`,
    columns.length > 0 ? columns : [...entry.columns],
  );
}

/**
 * Reads a CSV file given by path; throws `UserError` when it is missing or malformed (see
 * `parseSeriesCsv`).
 */
export async function loadSeriesCsv(path: string, columns: string[] = []): Promise<TimeSeries> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new UserError(
      `the series file ${path} does not exist; give a CSV file with a date column and numeric ` +
        `columns (relative paths start at the working directory, ${Deno.cwd()})`,
      { cause: error },
    );
  }
  return parseSeriesCsv(text, path, columns);
}

/**
 * Parses CSV text whose first column is the date. `columns` selects value columns by header name
 * (default: every column after the first).
 *
 * Throws `UserError` naming the line and column for a missing or non-numeric value, and for an
 * unknown column, a row with the wrong number of fields, or a file without data rows.
 */
export function parseSeriesCsv(text: string, source: string, columns: string[] = []): TimeSeries {
  const result: PapaParseResult = Papa.parse(text, { header: false });
  const lines = result.data;
  const header = lines[0] ?? [];
  if (header.length < 2) {
    throw new UserError(
      `the series ${source} needs a header row with a date column and at least one value ` +
        `column, got ${JSON.stringify(header)}`,
    );
  }

  const selected = columns.length > 0 ? columns : header.slice(1);
  const indices = selected.map((name) => {
    const index = header.indexOf(name);
    if (index < 1) {
      throw new UserError(
        `task.columns lists "${name}", which is not a value column of ${source}; its columns ` +
          `after the date are ${header.slice(1).join(", ")}`,
      );
    }
    return index;
  });

  const dates: string[] = [];
  const values: number[] = [];
  for (let i = 1; i < lines.length; i++) {
    const fields = lines[i];
    if (fields.length === 1 && fields[0].trim() === "") continue;
    // NOTE: the line number assumes no quoted field spans several lines.
    const line = i + 1;
    if (fields.length !== header.length) {
      throw new UserError(
        `line ${line} of ${source} has ${fields.length} fields but the header has ` +
          `${header.length}; fix that row`,
      );
    }
    dates.push(fields[0]);
    indices.forEach((index, c) => {
      const cell = fields[index].trim();
      const value = cell === "" ? NaN : Number(cell);
      if (!Number.isFinite(value)) {
        throw new UserError(
          `line ${line} of ${source}, column "${selected[c]}": ${JSON.stringify(fields[index])} ` +
            `is not a number; fix the value, or leave the column out with task.columns`,
        );
      }
      values.push(value);
    });
  }

  if (dates.length === 0) {
    throw new UserError(`the series ${source} has a header but no data rows; add rows`);
  }
  return {
    source,
    dates,
    columns: selected,
    values: Float64Array.from(values),
    rows: dates.length,
  };
}
