/**
 * Metrics CSV files: a writer that puts each row on disk as it is logged, and a reader that turns
 * numbers (including NaN and ±Infinity) back into numbers.
 *
 * Example:
 * ```ts
 * const csv = await CsvWriter.create("results/x/run/metrics.csv", ["step", "loss"]);
 * csv.write({ step: 1, loss: 5.54 });
 * csv.close();
 * const rows = await readCsv("results/x/run/metrics.csv"); // [{ step: 1, loss: 5.54 }]
 * ```
 */

import Papa from "papaparse";

/** A CSV cell value as written and as read back. */
export type CsvValue = number | string;

/** Options for `CsvWriter.create`. */
export interface CsvWriterOptions {
  /**
   * Append to an existing file instead of creating a new one (default false). The header is
   * written only when the file is empty. Without it, an existing file is an error, so a run never
   * overwrites another run's metrics.
   */
  append?: boolean;
}

/** Writes CSV rows with a fixed column order, one unbuffered write per row. */
export class CsvWriter {
  readonly path: string;
  readonly columns: readonly string[];
  #file: Deno.FsFile;
  #encoder = new TextEncoder();

  private constructor(path: string, columns: string[], file: Deno.FsFile) {
    this.path = path;
    this.columns = columns;
    this.#file = file;
  }

  /**
   * Opens `path` for writing and writes the header row.
   *
   * Throws `Deno.errors.AlreadyExists` when the file exists and `append` is not set.
   */
  static async create(
    path: string,
    columns: string[],
    options: CsvWriterOptions = {},
  ): Promise<CsvWriter> {
    if (columns.length === 0) throw new Error(`CsvWriter for ${path} needs at least one column`);

    const file = options.append
      ? await Deno.open(path, { append: true, create: true })
      : await Deno.open(path, { write: true, createNew: true });
    const writer = new CsvWriter(path, [...columns], file);

    const { size } = await file.stat();
    if (size === 0) writer.#writeLine(columns);
    return writer;
  }

  /**
   * Appends one row; a column missing from `row` is written as an empty cell.
   *
   * The line goes to the operating system before this returns, so a crash of the process keeps
   * every row written so far. The file is not fsync'ed, so a power loss may still drop rows.
   * Throws when `row` has a key that is not a column.
   */
  write(row: Record<string, CsvValue>): void {
    for (const key of Object.keys(row)) {
      if (!this.columns.includes(key)) {
        throw new Error(
          `CSV row key "${key}" is not a column of ${this.path}; columns: ${
            this.columns.join(", ")
          }`,
        );
      }
    }

    this.#writeLine(this.columns.map((column) => formatCell(row[column])));
  }

  /** Closes the file; later writes throw. */
  close(): void {
    this.#file.close();
  }

  #writeLine(cells: string[]): void {
    const line = Papa.unparse([cells], { newline: "\n" }) + "\n";
    const bytes = this.#encoder.encode(line);

    // writeSync may write fewer bytes than requested, so loop until the whole line is written.
    let written = 0;
    while (written < bytes.length) written += this.#file.writeSync(bytes.subarray(written));
  }
}

/**
 * Reads a CSV file with a header row into one object per row.
 *
 * Numeric cells, `NaN`, `Infinity` and `-Infinity` become numbers; other cells stay strings, and
 * an empty cell is `""`. Empty lines, including the one after a trailing newline, are skipped.
 * Throws when the file is malformed, naming the row.
 */
export async function readCsv(path: string): Promise<Record<string, CsvValue>[]> {
  const text = await Deno.readTextFile(path);
  const result: PapaParseResult = Papa.parse(text, { header: true, skipEmptyLines: true });

  const error = result.errors[0];
  if (error !== undefined) {
    throw new Error(`invalid CSV in ${path}, data row ${(error.row ?? 0) + 1}: ${error.message}`);
  }

  return result.data.map((row) => {
    const parsed: Record<string, CsvValue> = {};
    for (const [key, cell] of Object.entries(row)) parsed[key] = parseCell(cell);
    return parsed;
  });
}

// papaparse 5.5 ships no type declarations, so these are the fields that readCsv uses.
interface PapaParseResult {
  data: Record<string, string>[];
  errors: { row?: number; message: string }[];
}

const NUMBER_PATTERN = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function formatCell(value: CsvValue | undefined): string {
  if (value === undefined) return "";
  // String(NaN) is "NaN" and String(-Infinity) is "-Infinity", which parseCell reads back.
  return String(value);
}

function parseCell(cell: string): CsvValue {
  if (cell === "NaN") return NaN;
  if (cell === "Infinity") return Infinity;
  if (cell === "-Infinity") return -Infinity;
  if (NUMBER_PATTERN.test(cell)) return Number(cell);
  return cell;
}
