/** The optimizer library: algorithms, parameter groups, schedules and gradient clipping. */

export type {
  AdamWGroupOptions,
  Algorithm,
  GroupInfo,
  GroupOptions,
  MuonGroupOptions,
  MuonScaleRule,
  Optimizer,
  ParamGroup,
  ParamUpdate,
  SgdGroupOptions,
  StateArray,
} from "./optimizer.ts";
export { AdamW, adamwUpdate, defaultDecay } from "./adamw.ts";
export type { AdamWOptions } from "./adamw.ts";
export { muonScale, muonUpdate, newtonSchulz, NS_COEFFICIENTS } from "./muon.ts";
export type { NewtonSchulzOptions } from "./muon.ts";
export { sgdUpdate } from "./sgd.ts";
export { GroupedOptimizer } from "./grouped.ts";
export { assignGroups, describeGroups, matchGlob, paramRole } from "./groups.ts";
export type { AssignedGroup, GroupRule, ParamRole } from "./groups.ts";
export { createOptimizer } from "./create.ts";
export type { MuonSettings, OptimizerSettings } from "./create.ts";
export { learningRate, lrFactor, muonMomentum, wsdDecaySteps } from "./schedule.ts";
export type { Cooldown, MomentumWarmup, ScheduleName, ScheduleOptions } from "./schedule.ts";
export { globalGradNorm, zeroGrad } from "./clip.ts";
