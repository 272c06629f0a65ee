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
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
  return { samples, median, min: sorted[0], max: sorted[sorted.length - 1] };
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
