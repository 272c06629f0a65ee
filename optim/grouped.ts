/**
 * `GroupedOptimizer`: the `Optimizer` that runs each parameter group with its own algorithm, so
 * Muon can take the hidden matrices while AdamW takes embeddings, head, norms and biases. All
 * groups share one step counter.
 */

import type { HostArray } from "../kernels/backend.ts";
import { formatShape, Tensor } from "../tensor/mod.ts";
import { ADAMW_SLOTS, adamwUpdate } from "./adamw.ts";
import { MUON_SLOTS, muonUpdate } from "./muon.ts";
import { assignInPlace, persistentZeros } from "./_state.ts";
import { sgdSlots, sgdUpdate } from "./sgd.ts";
import type {
  GroupInfo,
  GroupOptions,
  Optimizer,
  ParamGroup,
  ParamUpdate,
  StateArray,
} from "./optimizer.ts";

interface Entry {
  name: string;
  param: Tensor;
  options: GroupOptions;
  state: Map<string, Tensor>;
}

export class GroupedOptimizer implements Optimizer {
  readonly groups: readonly GroupInfo[];
  #step = 0;
  readonly #entries: Entry[] = [];

  /**
   * Creates zeroed state for every parameter. Throws when two groups share a name, a parameter
   * is in two groups, an option is out of range, or a Muon group contains a tensor of rank < 2.
   */
  constructor(groups: ParamGroup[]) {
    const groupNames = new Set<string>();
    const owner = new Map<string, string>();
    for (const group of groups) {
      if (groupNames.has(group.name)) {
        throw new Error(`optimizer: two parameter groups are named "${group.name}"`);
      }
      groupNames.add(group.name);
      checkGroupOptions(group);

      for (const [name, param] of group.params) {
        const previous = owner.get(name);
        if (previous !== undefined) {
          throw new Error(
            `optimizer: parameter ${name} is in groups "${previous}" and "${group.name}"; put it in one`,
          );
        }
        owner.set(name, group.name);
        if (group.options.algorithm === "muon" && param.rank < 2) {
          throw new Error(
            `optimizer: group "${group.name}" sends ${name} ${
              formatShape(param.shape)
            } to Muon, which needs ` +
              `rank ≥ 2; route 1-D tensors to AdamW`,
          );
        }

        const state = new Map<string, Tensor>();
        for (const slot of slotsOf(group.options)) {
          state.set(slot, persistentZeros(param, `${group.options.algorithm}.${slot}.${name}`));
        }
        this.#entries.push({ name, param, options: group.options, state });
      }
    }
    this.groups = groups.map((g) => ({
      name: g.name,
      paramNames: [...g.params.keys()],
      options: { ...g.options },
    }));
  }

  get step(): number {
    return this.#step;
  }

  update(lrFactor: number, gradScale: Tensor | null): void {
    if (!Number.isFinite(lrFactor) || lrFactor < 0) {
      throw new Error(`optimizer: lrFactor is ${lrFactor} but must be a finite number ≥ 0`);
    }
    this.#step++;

    for (const { name, param, options, state } of this.#entries) {
      if (param.grad === null) continue;
      const update: ParamUpdate = {
        name,
        param,
        grad: param.grad,
        state,
        lr: options.lr * lrFactor,
        gradScale,
        step: this.#step,
      };
      switch (options.algorithm) {
        case "adamw":
          adamwUpdate(update, options);
          break;
        case "muon":
          muonUpdate(update, options);
          break;
        case "sgd":
          sgdUpdate(update, options);
          break;
      }
    }
  }

  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const { name, options, state } of this.#entries) {
      for (const [slot, tensor] of state) out.set(`${options.algorithm}.${slot}.${name}`, tensor);
    }
    return out;
  }

  loadState(tensors: ReadonlyMap<string, StateArray>, step: number): void {
    if (!Number.isInteger(step) || step < 0) {
      throw new Error(`optimizer.loadState: step is ${step} but must be an integer ≥ 0`);
    }
    const own = this.stateTensors();
    const missing = [...own.keys()].filter((k) => !tensors.has(k));
    const unexpected = [...tensors.keys()].filter((k) => !own.has(k));
    if (missing.length > 0 || unexpected.length > 0) {
      throw new Error(
        `optimizer.loadState: saved state does not match this optimizer's groups: ` +
          `missing ${listNames(missing)}, unexpected ${listNames(unexpected)}; ` +
          `resume with the optimizer config the checkpoint was saved with`,
      );
    }

    // Check everything before writing anything, so a failed load leaves the state untouched.
    const arrays = new Map<string, HostArray>();
    for (const [key, target] of own) {
      const saved = tensors.get(key)!;
      const data = "data" in saved ? saved.data : saved;
      if ("shape" in saved && formatShape(saved.shape) !== formatShape(target.shape)) {
        throw new Error(
          `optimizer.loadState: ${key} was saved with shape ${formatShape(saved.shape)} ` +
            `but the parameter has shape ${formatShape(target.shape)}`,
        );
      }
      if (data.length !== target.size) {
        throw new Error(
          `optimizer.loadState: ${key} has ${data.length} values but needs ${target.size}`,
        );
      }
      arrays.set(key, data);
    }

    for (const [key, target] of own) {
      const source = Tensor.fromArray(target.backend, arrays.get(key)!, target.shape, "f32");
      assignInPlace(target, source);
      source.dispose();
    }
    this.#step = step;
  }

  dispose(): void {
    for (const { state } of this.#entries) {
      for (const t of state.values()) t.dispose();
      state.clear();
    }
  }
}

function slotsOf(options: GroupOptions): readonly string[] {
  switch (options.algorithm) {
    case "adamw":
      return ADAMW_SLOTS;
    case "muon":
      return MUON_SLOTS;
    case "sgd":
      return sgdSlots(options);
  }
}

function listNames(names: string[]): string {
  if (names.length === 0) return "none";
  const shown = names.slice(0, 5).join(", ");
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}

/** Throws naming the group and the option when an option is out of range. */
function checkGroupOptions(group: ParamGroup): void {
  const o = group.options;
  const fail = (option: string, value: unknown, range: string): never => {
    throw new Error(
      `optimizer: group "${group.name}" has ${option} ${value} but it must be ${range}`,
    );
  };
  const finiteAtLeast0 = (option: string, value: number) => {
    if (!Number.isFinite(value) || value < 0) fail(option, value, "a finite number ≥ 0");
  };
  const unitInterval = (option: string, value: number) => {
    if (!(value >= 0 && value < 1)) fail(option, value, "in [0, 1)");
  };

  finiteAtLeast0("lr", o.lr);
  finiteAtLeast0("weightDecay", o.weightDecay);
  switch (o.algorithm) {
    case "adamw":
      unitInterval("beta1", o.beta1);
      unitInterval("beta2", o.beta2);
      if (!(o.eps > 0 && Number.isFinite(o.eps))) fail("eps", o.eps, "a finite number > 0");
      break;
    case "muon":
      unitInterval("momentum", o.momentum);
      if (!Number.isInteger(o.nsSteps) || o.nsSteps < 1) {
        fail("nsSteps", o.nsSteps, "an integer ≥ 1");
      }
      if (o.scaleRule !== "original" && o.scaleRule !== "matchRmsAdamW") {
        fail("scaleRule", o.scaleRule, "original or matchRmsAdamW");
      }
      if (o.momentumWarmup !== null) {
        unitInterval("momentumWarmup.start", o.momentumWarmup.start);
        const steps = o.momentumWarmup.warmupSteps;
        if (!Number.isInteger(steps) || steps < 0) {
          fail("momentumWarmup.warmupSteps", steps, "an integer ≥ 0");
        }
      }
      break;
    case "sgd":
      unitInterval("momentum", o.momentum);
      break;
    default:
      fail("algorithm", (o as { algorithm: unknown }).algorithm, "adamw, muon or sgd");
  }
}
