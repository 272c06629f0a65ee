/** Repeated timing of one async measurement: warm-up runs excluded, then min, median and max. */

export interface Timing {
  /** Milliseconds of each counted repetition, in the order they ran. */
  samples: number[];
  median: number;
  min: number;
  max: number;
}

export interface TimingOptions {
  /** Runs before counting, which compile shaders and kernels and fill buffer pools (default 2). */
  warmup?: number;
  /** Counted repetitions (default 5). */
  repetitions?: number;
}

/** Times `run` (which must finish its work before resolving) and returns its statistics in ms. */
export async function time(run: () => Promise<void>, options: TimingOptions = {}): Promise<Timing> {
  const warmup = options.warmup ?? 2;
  const repetitions = options.repetitions ?? 5;
  for (let i = 0; i < warmup; i++) await run();
  const samples: number[] = [];
  for (let i = 0; i < repetitions; i++) {
    const start = performance.now();
    await run();
    samples.push(performance.now() - start);
  }
  return { samples, ...medianMinMax(samples) };
}

/** Returns the median, min and max of a non-empty list of samples. */
export function medianMinMax(samples: number[]): { median: number; min: number; max: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1] };
}

/** Formats samples as "median (min–max)" with `digits` decimals. */
export function formatSpread(samples: number[], digits: number): string {
  const { median, min, max } = medianMinMax(samples);
  return `${median.toFixed(digits)} (${min.toFixed(digits)}–${max.toFixed(digits)})`;
}

/** Reads the whole count after `name` in the command line, or `fallback` when the flag is absent. */
export function countFlag(name: string, fallback: number): number {
  const index = Deno.args.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(Deno.args[index + 1]);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} is ${Deno.args[index + 1]}; give a whole count ≥ 1`);
  }
  return value;
}

/** Converts a timing of `flops` floating-point operations per run to GFLOP/s (min is from max). */
export function gflops(
  timing: Timing,
  flops: number,
): { median: number; min: number; max: number } {
  return {
    median: flops / timing.median / 1e6,
    min: flops / timing.max / 1e6,
    max: flops / timing.min / 1e6,
  };
}
