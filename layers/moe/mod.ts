/** Mixture-of-experts layers: the MoE layer, its spec, the router contract and built-in routers, and routing diagnostics. */

export * from "./diagnostics.ts";
export { GroupedExperts } from "./experts.ts";
export type { GroupedExpertsOptions } from "./experts.ts";
export { MoeLayer } from "./moe_layer.ts";
export type {
  ExpertOutputRecord,
  MoeContext,
  MoeLayerOptions,
  RoutingRecord,
} from "./moe_layer.ts";
export {
  deviceBalanceLoss,
  expertCounts,
  loadBalanceLoss,
  normalizeRows,
  Router,
  slotTokens,
  zLoss,
} from "./router.ts";
export type { DispatchPlan, RouteInput, RouterContext } from "./router.ts";
export { createRouter, ROUTERS } from "./routers/mod.ts";
export type { RouterEntry, RouterFactory, RouterSpec } from "./routers/mod.ts";
export { auxFreeOptions, createAuxFreeRouter } from "./routers/aux_free.ts";
export { createDeepseekRouter, deepseekOptions } from "./routers/deepseek.ts";
export {
  createExpertChoiceRouter,
  expertChoiceOptions,
  ExpertChoiceRouter,
} from "./routers/expert_choice.ts";
export { createHashRouter, hashOptions, HashRouter } from "./routers/hash.ts";
export { createRandomRouter, randomOptions, RandomRouter } from "./routers/random.ts";
export {
  createSoftmaxTopKRouter,
  softmaxTopKOptions,
  TokenChoiceRouter,
} from "./routers/softmax_topk.ts";
export type { TokenChoiceSettings } from "./routers/softmax_topk.ts";
export {
  AttentionRouter,
  attentionRouterOptions,
  createAttentionRouter,
} from "./routers/attention.ts";
export { graphMixOptions, GraphOfTokensRouter } from "./routers/graph_of_tokens.ts";
export {
  createProgressiveRouter,
  progressiveOptions,
  ProgressiveRouter,
  resolveTopKSchedule,
  scheduledTopK,
} from "./routers/progressive.ts";
export type { TopKSchedule } from "./routers/progressive.ts";
export { createSegmentRouter, segmentOptions, SegmentRouter } from "./routers/segment.ts";
export {
  createSimilarityRouter,
  similarityOptions,
  SimilarityRouter,
} from "./routers/similarity.ts";
export {
  compareSuperExpertPruning,
  evaluateLoss,
  flagSuperExperts,
  percentile,
  profileSuperExperts,
} from "./super_experts.ts";
export type {
  ExpertPeaks,
  FlagOptions,
  MoeModel,
  PruningComparison,
  SuperExpert,
  TokenBatch,
} from "./super_experts.ts";
export { moeLayerIndices, resolveMoe } from "./spec.ts";
export type { DropPolicy, MoeSpec, ResolvedMoe } from "./spec.ts";
