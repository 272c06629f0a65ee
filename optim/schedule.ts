/**
 * Learning-rate and momentum schedules as pure functions of the step, so a resumed run gets the
 * same rates as an uninterrupted one. Steps count updates from 0.
 *
 * - constant: linear warm-up, then the peak.
 * - cosine: linear warm-up, then a half cosine from the peak to peak·minLrRatio at the last step.
 * - wsd (warm-up–stable–decay, Hägele et al., "Scaling Laws and Compute-Optimal Training Beyond
 *   Fixed Training Durations", 2024): linear warm-up, the peak, then a cooldown over the last
 *   decayFraction of the run, either linear or 1−√.
 */

export type ScheduleName = "constant" | "cosine" | "wsd";

/** The shape of the cooldown of a WSD schedule. */
export type Cooldown = "linear" | "1-sqrt";

export interface ScheduleOptions {
  name: ScheduleName;
  /** Updates of linear warm-up from peak/warmupSteps to the peak; 0 starts at the peak. */
  warmupSteps: number;
  /** The floor as a fraction of the peak (cosine and wsd). */
  minLrRatio: number;
  /** The fraction of all updates spent in the WSD cooldown (wsd only; default 0.2). */
  decayFraction?: number;
  /** The WSD cooldown shape (wsd only; default "1-sqrt", which beat linear in Hägele et al.). */
  cooldown?: Cooldown;
}

/**
 * Returns the learning-rate multiplier, in [0, 1], for update number `step` (from 0) of
 * `totalSteps`. Each parameter group's learning rate is its base rate times this factor.
 *
 * ```ts
 * lrFactor(0, 100, { name: "cosine", warmupSteps: 10, minLrRatio: 0.1 }); // 0.1
 * ```
 */
export function lrFactor(step: number, totalSteps: number, options: ScheduleOptions): number {
  checkSchedule(step, totalSteps, options);
  const { warmupSteps, minLrRatio } = options;
  if (step < warmupSteps) return (step + 1) / warmupSteps;

  switch (options.name) {
    case "constant":
      return 1;

    case "cosine": {
      // The last update (totalSteps − 1) lands exactly on the floor.
      const decaySteps = Math.max(1, totalSteps - 1 - warmupSteps);
      const progress = Math.min(1, (step - warmupSteps) / decaySteps);
      return minLrRatio + 0.5 * (1 - minLrRatio) * (1 + Math.cos(Math.PI * progress));
    }

    case "wsd": {
      const decaySteps = wsdDecaySteps(totalSteps, options);
      const decayStart = totalSteps - decaySteps;
      if (decaySteps === 0 || step < decayStart) return 1;

      // Both shapes are 1 at decayStart and reach minLrRatio at step totalSteps, one past the last
      // update, so the last update still has a small positive rate when minLrRatio is 0.
      const progress = Math.min(1, (step - decayStart) / decaySteps);
      const shape = (options.cooldown ?? "1-sqrt") === "linear"
        ? (totalSteps - step) / decaySteps
        : 1 - Math.sqrt(progress);
      return minLrRatio + (1 - minLrRatio) * Math.max(0, shape);
    }
  }
}

/**
 * Returns the learning rate for update number `step` (from 0) of `totalSteps`: `peak` times
 * `lrFactor`.
 */
export function learningRate(
  peak: number,
  step: number,
  totalSteps: number,
  options: ScheduleOptions,
): number {
  return peak * lrFactor(step, totalSteps, options);
}

/** Returns the number of cooldown updates of a WSD schedule: decayFraction·totalSteps, rounded. */
export function wsdDecaySteps(totalSteps: number, options: ScheduleOptions): number {
  const fraction = options.decayFraction ?? 0.2;
  return Math.min(totalSteps, Math.round(fraction * totalSteps));
}

/** Muon momentum warm-up: from `start` to `end` linearly over `warmupSteps` updates. */
export interface MomentumWarmup {
  start: number;
  end: number;
  warmupSteps: number;
}

/**
 * Returns the Muon momentum for update number `step` (from 0):
 * start + (end − start)·min(step / warmupSteps, 1). The modded-nanogpt speedrun records use
 * 0.85 → 0.95 over 300 updates.
 */
export function muonMomentum(step: number, warmup: MomentumWarmup): number {
  const { start, end, warmupSteps } = warmup;
  if (!Number.isInteger(step) || step < 0) {
    throw new Error(`muonMomentum: step is ${step} but must be an integer ≥ 0`);
  }
  if (warmupSteps <= 0) return end;
  return start + (end - start) * Math.min(step / warmupSteps, 1);
}

function checkSchedule(step: number, totalSteps: number, options: ScheduleOptions): void {
  if (!Number.isInteger(step) || step < 0) {
    throw new Error(`schedule: step is ${step} but must be an integer ≥ 0`);
  }
  if (!Number.isInteger(totalSteps) || totalSteps < 1) {
    throw new Error(`schedule: totalSteps is ${totalSteps} but must be an integer ≥ 1`);
  }
  if (!Number.isInteger(options.warmupSteps) || options.warmupSteps < 0) {
    throw new Error(`schedule: warmupSteps is ${options.warmupSteps} but must be an integer ≥ 0`);
  }
  if (!(options.minLrRatio >= 0 && options.minLrRatio <= 1)) {
    throw new Error(`schedule: minLrRatio is ${options.minLrRatio} but must be in [0, 1]`);
  }
  const fraction = options.decayFraction;
  if (fraction !== undefined && !(fraction >= 0 && fraction <= 1)) {
    throw new Error(`schedule: decayFraction is ${fraction} but must be in [0, 1]`);
  }
  if (!["constant", "cosine", "wsd"].includes(options.name)) {
    throw new Error(`schedule: unknown name "${options.name}"; use constant, cosine or wsd`);
  }
  const cooldown = options.cooldown;
  if (cooldown !== undefined && cooldown !== "linear" && cooldown !== "1-sqrt") {
    throw new Error(`schedule: unknown cooldown "${cooldown}"; use linear or 1-sqrt`);
  }
}
