/**
 * A one-line progress display for a terminal, rewritten in place with `\r`:
 * `step 120/600  20%  eta 3m12s  loss 2.41`.
 *
 * When stdout is not a terminal (a log file, CI), it writes nothing, because the trainer logs its
 * own lines and a file full of carriage returns is hard to read.
 */

/** The output that `Progress` writes to; `Deno.stdout` by default. */
export interface ProgressOutput {
  writeSync(bytes: Uint8Array): number;
  isTerminal(): boolean;
}

/** Options for `Progress`. */
export interface ProgressOptions {
  output?: ProgressOutput;
  /** Clock in milliseconds (default `performance.now`). */
  now?: () => number;
  /** Minimum time between redraws in milliseconds (default 100); the last step always draws. */
  minIntervalMs?: number;
}

/** A progress line for a loop of known length. */
export class Progress {
  #output: ProgressOutput;
  #enabled: boolean;
  #now: () => number;
  #minIntervalMs: number;
  #encoder = new TextEncoder();
  #start?: { step: number; time: number };
  #lastDraw = -Infinity;
  #lineShown = false;

  constructor(options: ProgressOptions = {}) {
    this.#output = options.output ?? Deno.stdout;
    this.#enabled = this.#output.isTerminal();
    this.#now = options.now ?? (() => performance.now());
    this.#minIntervalMs = options.minIntervalMs ?? 100;
  }

  /**
   * Redraws the line for `step` of `total`, followed by `extra` (for example `loss 2.41`).
   *
   * The ETA extrapolates the time per step measured since the first call.
   */
  update(step: number, total: number, extra = ""): void {
    if (!this.#enabled) return;

    const time = this.#now();
    this.#start ??= { step, time };
    if (step < total && time - this.#lastDraw < this.#minIntervalMs) return;
    this.#lastDraw = time;

    const percent = total > 0 ? Math.floor((100 * step) / total) : 100;
    const parts = [`step ${step}/${total}`, `${String(percent).padStart(3)}%`];

    const stepsDone = step - this.#start.step;
    if (stepsDone > 0) {
      const msPerStep = (time - this.#start.time) / stepsDone;
      parts.push(`eta ${formatDuration((total - step) * msPerStep)}`);
    }
    if (extra) parts.push(extra);

    // "\x1b[K" erases the rest of the line, in case the previous line was longer.
    this.#write(`\r${parts.join("  ")}\x1b[K`);
    this.#lineShown = true;
  }

  /** Erases the progress line, so a log line can be printed; the next `update` redraws it. */
  clear(): void {
    if (!this.#lineShown) return;
    this.#write("\r\x1b[K");
    this.#lineShown = false;
    this.#lastDraw = -Infinity;
  }

  /** Ends the progress line with a newline, leaving the last state visible. */
  done(): void {
    if (!this.#lineShown) return;
    this.#write("\n");
    this.#lineShown = false;
  }

  #write(text: string): void {
    const bytes = this.#encoder.encode(text);
    let written = 0;
    while (written < bytes.length) written += this.#output.writeSync(bytes.subarray(written));
  }
}

/** Formats milliseconds as `45s`, `3m12s` or `1h05m`. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;

  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, "0")}s`;

  const hours = Math.floor(minutes / 60);
  return `${hours}h${String(minutes % 60).padStart(2, "0")}m`;
}
