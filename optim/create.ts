/**
 * Builds an optimizer from flat settings: assigns parameter groups, then fills each group's
 * options from the algorithm's defaults and the group's overrides.
 *
 * ```ts
 * const { optimizer, warnings } = createOptimizer(model.parameters(), { name: "muon", lr: 3e-3 });
 * optimizer.update(lrFactor(step, totalSteps, schedule), clipCoefficient);
 * ```
 */

import type { Tensor } from "../tensor/mod.ts";
import { GroupedOptimizer } from "./grouped.ts";
import { assignGroups, type GroupRule } from "./groups.ts";
import type { Algorithm, GroupOptions, MuonGroupOptions, ParamGroup } from "./optimizer.ts";

/** Muon settings; each defaults to the harness default noted on it. */
export interface MuonSettings {
  /** Default: the optimizer's `lr`, which the matchRmsAdamW scale rule makes a fair share. */
  lr?: number;
  /** Default: the optimizer's `weightDecay`. */
  weightDecay?: number;
  /** Default 0.95. */
  momentum?: number;
  /** Default true. */
  nesterov?: boolean;
  /** Newton–Schulz iterations, default 5. */
  nsSteps?: number;
  /** Default "matchRmsAdamW", so one lr sweep serves Muon and AdamW. */
  scaleRule?: MuonGroupOptions["scaleRule"];
  /** Linear warm-up of the momentum from `start`, e.g. { start: 0.85, warmupSteps: 300 }. */
  momentumWarmup?: { start: number; warmupSteps: number } | null;
}

export interface OptimizerSettings {
  /** The main algorithm: "muon" takes hidden matrices and leaves the rest to AdamW. */
  name: Algorithm;
  /** Base lr of AdamW or SGD (and of Muon unless `muon.lr` is set). */
  lr: number;
  /** AdamW β1, default 0.9. */
  beta1?: number;
  /** AdamW β2, default 0.95. */
  beta2?: number;
  /** AdamW ε, default 1e-8. */
  eps?: number;
  /** Weight decay of the decayed groups, default 0.1. */
  weightDecay?: number;
  /** SGD momentum, default 0.9. */
  momentum?: number;
  /** SGD Nesterov momentum, default false. */
  nesterov?: boolean;
  muon?: MuonSettings;
  /** Explicit group rules, applied before the defaults. */
  groups?: GroupRule[];
}

/**
 * Creates a `GroupedOptimizer` over `params`. Returns it with the warnings of `assignGroups`
 * (explicit rules that match no parameter), which the caller should log. Throws on rule conflicts,
 * rank-1 tensors sent to Muon, and out-of-range options.
 */
export function createOptimizer(
  params: Map<string, Tensor>,
  settings: OptimizerSettings,
): { optimizer: GroupedOptimizer; warnings: string[] } {
  const { groups, warnings } = assignGroups(params, settings.groups ?? [], settings.name);
  const paramGroups: ParamGroup[] = groups.map((group) => {
    const options = baseOptions(group.algorithm, settings);
    if (group.lr !== undefined) options.lr = group.lr;
    if (group.weightDecay !== undefined) options.weightDecay = group.weightDecay;
    return { name: group.name, params: group.params, options };
  });
  return { optimizer: new GroupedOptimizer(paramGroups), warnings };
}

function baseOptions(algorithm: Algorithm, settings: OptimizerSettings): GroupOptions {
  const weightDecay = settings.weightDecay ?? 0.1;
  switch (algorithm) {
    case "adamw":
      return {
        algorithm,
        lr: settings.lr,
        beta1: settings.beta1 ?? 0.9,
        beta2: settings.beta2 ?? 0.95,
        eps: settings.eps ?? 1e-8,
        weightDecay,
      };
    case "muon": {
      const muon = settings.muon ?? {};
      return {
        algorithm,
        lr: muon.lr ?? settings.lr,
        weightDecay: muon.weightDecay ?? weightDecay,
        momentum: muon.momentum ?? 0.95,
        nesterov: muon.nesterov ?? true,
        nsSteps: muon.nsSteps ?? 5,
        scaleRule: muon.scaleRule ?? "matchRmsAdamW",
        momentumWarmup: muon.momentumWarmup ?? null,
      };
    }
    case "sgd":
      return {
        algorithm,
        lr: settings.lr,
        weightDecay,
        momentum: settings.momentum ?? 0.9,
        nesterov: settings.nesterov ?? false,
      };
    default:
      throw new Error(`optimizer: unknown algorithm "${algorithm}"; use adamw, muon or sgd`);
  }
}
