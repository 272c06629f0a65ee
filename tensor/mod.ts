/** The tensor layer: `Tensor`, autograd, scopes, the RNG and the differentiable ops. */

export { noGrad, Tensor } from "./tensor.ts";
export type { GradNode } from "./tensor.ts";
export { backward } from "./autograd.ts";
export { withScope, withScopeAsync } from "./scope.ts";
export { Rng } from "./rng.ts";
export type { RngState } from "./rng.ts";
export { broadcastShapes, formatShape, ShapeError, sizeOf } from "./shape.ts";
export * from "./ops/elementwise.ts";
export * from "./ops/reduce.ts";
export * from "./ops/linalg.ts";
export * from "./ops/layout.ts";
export * from "./ops/nn.ts";
export * from "./ops/attention.ts";
export * from "./ops/moe.ts";
