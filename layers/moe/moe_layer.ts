/**
 * The mixture-of-experts layer: route, permute token rows by expert, run the routed experts as
 * grouped matrix products, and combine each token's expert outputs with its weights; shared
 * experts run on every token. Every router goes through this one path because every router
 * returns a flat list of (token, expert, weight) assignments.
 *
 * Steps for n tokens and `count` assignments:
 * 1. capacity (optional): assignments ranked past C = ceil(count / E · capacityFactor) within
 *    their expert get expert −1 (dropped; the token keeps only its residual for that slot);
 * 2. sort: a stable counting sort by expert gives each kept assignment a row, so each expert's
 *    rows are contiguous and in token order;
 * 3. experts: gather the token rows, run grouped products (empty experts cost nothing);
 * 4. combine: y_t = Σ over t's kept assignments of weight · expert row, a scatter-add by token
 *    that sums in a fixed order, so runs are reproducible.
 */

import type { Backend } from "../../kernels/backend.ts";
import {
  add,
  dropOverCapacity,
  gatherRows,
  mul,
  noGrad,
  type Rng,
  scatterAddRows,
  sortByExpert,
  Tensor,
} from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import { Mlp } from "../mlp.ts";
import { Module } from "../module.ts";
import { GroupedExperts } from "./experts.ts";
import type { Router } from "./router.ts";
import { createRouter, type RouterSpec } from "./routers/mod.ts";
import type { ResolvedMoe } from "./spec.ts";

export interface MoeLayerOptions extends ResolvedMoe {
  dModel: number;
  router: RouterSpec;
  initStd: number;
  outputInitStd: number;
  /** Vocabulary size when tokens have ids (hash routing needs it). */
  vocabSize: number | null;
  /** Block index of this layer, for routers with per-layer options; null when standalone. */
  layerIndex?: number | null;
  /** Blocks in the model, for routers with per-layer schedules; null when standalone. */
  numLayers?: number | null;
}

/** Extra inputs of one forward. */
export interface MoeContext {
  /** i32 token ids [batch·seqLen], or null when the model has none. */
  tokenIds: Tensor | null;
  /** Attention probabilities [batch, numHeads, seqLen, seqLen] of the block, for routers that need them. */
  attentionProbs?: Tensor | null;
}

/** Detached expert outputs of the last forward, kept while `recordExpertOutputs` is on. */
export interface ExpertOutputRecord {
  /** [count, dModel]: each kept assignment's down-projection output, before its combine weight. */
  outputs: Tensor;
  /** i32 [numExperts]: the first row of each expert in `outputs`; rows are grouped by expert. */
  offsets: Tensor;
}

/**
 * What the last forward routed, kept for diagnostics until the next forward of the layer. Its
 * tensors are detached copies that this layer owns and disposes.
 */
export interface RoutingRecord {
  numTokens: number;
  numExperts: number;
  /** K for token choice (assignment a is slot a mod K of token ⌊a / K⌋), null otherwise. */
  slotsPerToken: number | null;
  /** i32 [count]: the token of each assignment. */
  tokens: Tensor;
  /** i32 [count]: the router's experts before capacity dropping (−1 for empty slots). */
  routedExperts: Tensor;
  /** i32 [count]: the experts after capacity dropping. */
  keptExperts: Tensor;
  /** [count] combine weights. */
  weights: Tensor;
  /** [n, E] router probabilities, or null for routers without any. */
  probs: Tensor | null;
  /** Weighted auxiliary losses by name (scalars). */
  auxLosses: Record<string, Tensor>;
  /** Capacity per expert, or null when dropless. */
  capacity: number | null;
}

export class MoeLayer extends Module {
  readonly router: Router;
  readonly experts: GroupedExperts;
  readonly sharedExperts: Mlp | null;
  #lastRouting: RoutingRecord | null = null;
  #lastExpertOutputs: ExpertOutputRecord | null = null;
  #disabledMask: Tensor | null = null;
  #disabledExperts: readonly number[] = [];
  /** When true, each forward keeps its expert outputs in `lastExpertOutputs` (for profiling). */
  recordExpertOutputs = false;

  constructor(backend: Backend, rng: Rng, readonly options: MoeLayerOptions) {
    super();
    const { dModel, routedExperts, routedTopK, expertDFF, sharedExperts, ffn } = options;
    this.router = this.addModule(
      "router",
      createRouter(options.router, {
        backend,
        rng: rng.fork("router"),
        dModel,
        numExperts: routedExperts,
        topK: routedTopK,
        auxLossWeight: options.auxLossWeight,
        zLossWeight: options.zLossWeight,
        initStd: options.initStd,
        vocabSize: options.vocabSize,
        layerIndex: options.layerIndex ?? null,
        numLayers: options.numLayers ?? null,
        sharedExperts,
      }),
    );
    this.experts = this.addModule(
      "experts",
      new GroupedExperts(backend, rng, {
        numExperts: routedExperts,
        dModel,
        dFF: expertDFF,
        kind: ffn,
        initStd: options.initStd,
        outputInitStd: options.outputInitStd,
      }),
    );
    // The K_s shared experts run on every token, so they are fused into one MLP of K_s times the width.
    this.sharedExperts = sharedExperts > 0
      ? this.addModule(
        "sharedExperts",
        new Mlp(backend, rng, {
          dModel,
          dFF: sharedExperts * expertDFF,
          kind: ffn,
          initStd: options.initStd,
          outputInitStd: options.outputInitStd,
        }),
      )
      : null;
  }

  /** Expert outputs of the last forward while `recordExpertOutputs` is on, else null. */
  get lastExpertOutputs(): ExpertOutputRecord | null {
    return this.#lastExpertOutputs;
  }

  /** Routed experts whose output is zeroed (empty: none). */
  get disabledExperts(): readonly number[] {
    return this.#disabledExperts;
  }

  /**
   * Zeroes the outputs of the given routed experts, as Super Experts pruning does: the router is
   * unchanged, so tokens still go to a disabled expert with their usual weight and receive zero
   * from it (no renormalisation). An empty list enables every expert again.
   */
  set disabledExperts(experts: readonly number[]) {
    const numExperts = this.options.routedExperts;
    for (const e of experts) {
      if (!Number.isInteger(e) || e < 0 || e >= numExperts) {
        throw new Error(
          `MoeLayer.disabledExperts contains ${e}, but routed experts are numbered 0 to ` +
            `${numExperts - 1}`,
        );
      }
    }
    this.#disabledMask?.dispose();
    this.#disabledMask = null;
    this.#disabledExperts = [...new Set(experts)].sort((a, b) => a - b);
    if (this.#disabledExperts.length === 0) return;
    const mask = new Float32Array(numExperts).fill(1);
    for (const e of this.#disabledExperts) mask[e] = 0;
    this.#disabledMask = Tensor.fromArray(this.experts.up.backend, mask, [numExperts, 1], "f32");
    this.#disabledMask.persistent = true;
  }

  /** The routing of the last forward, or null before the first. */
  get lastRouting(): RoutingRecord | null {
    return this.#lastRouting;
  }

  /**
   * Runs the layer on x [batch, seqLen, dModel] (or [n, dModel] as one sequence). Returns the
   * output of x's shape and the sum of the router's weighted auxiliary losses (null when none).
   */
  forward(x: Tensor, context: MoeContext = { tokenIds: null }): {
    y: Tensor;
    auxLoss: Tensor | null;
  } {
    const { dModel, routedExperts } = this.options;
    if (x.shape[x.rank - 1] !== dModel || x.rank < 2) {
      throw new ShapeError(`MoeLayer: x must be [..., ${dModel}], got ${x.describe()}`);
    }
    const batch = x.rank === 3 ? x.shape[0] : 1;
    const n = x.size / dModel;
    const seqLen = n / batch;
    const flat = x.reshape([n, dModel]);

    const plan = this.router.route({
      x: flat,
      batch,
      seqLen,
      tokenIds: context.tokenIds,
      attentionProbs: context.attentionProbs ?? null,
    });
    const count = plan.experts.size;

    let kept = plan.experts;
    let capacity: number | null = null;
    if (this.options.capacityFactor !== null) {
      capacity = Math.ceil((count / routedExperts) * this.options.capacityFactor);
      const priority = this.options.dropPolicy === "probability"
        ? (plan.priority ?? plan.weights.detach())
        : null;
      kept = dropOverCapacity(plan.experts, routedExperts, capacity, priority);
    }

    const { order, positions, offsets } = sortByExpert(kept, routedExperts);
    const rowTokens = gatherRows(plan.tokens.reshape([count, 1]), order).reshape([count]);
    const xs = gatherRows(flat, rowTokens);
    const expertOut = this.experts.forward(xs, offsets);
    let rowWeights = gatherRows(plan.weights.reshape([count, 1]), order, { inverse: positions });
    if (this.#disabledMask !== null) {
      // A disabled expert's rows get weight 0; dropped rows (expert −1) are zero already.
      const rowExperts = gatherRows(kept.reshape([count, 1]), order).reshape([count]);
      rowWeights = mul(rowWeights, gatherRows(this.#disabledMask, rowExperts));
    }
    let y = scatterAddRows(mul(expertOut, rowWeights), rowTokens, n);
    if (this.sharedExperts !== null) {
      const shared = this.sharedExperts.forward(flat);
      y = add(y, plan.sharedGate ? mul(shared, plan.sharedGate) : shared);
    }
    if (this.recordExpertOutputs) this.#recordExpertOutputs(expertOut, offsets);

    this.#record(plan, kept, n, capacity);
    let auxLoss: Tensor | null = null;
    for (const loss of Object.values(plan.auxLosses)) {
      auxLoss = auxLoss === null ? loss : add(auxLoss, loss);
    }
    return { y: y.reshape(x.shape), auxLoss };
  }

  /** Calls the router's post-update hook (the aux-free bias update). */
  afterStep(): void {
    this.router.afterStep();
  }

  /** Passes the training step to the router (progressive top-K schedules). */
  setStep(step: number, totalSteps: number): void {
    this.router.setStep(step, totalSteps);
  }

  override dispose(): void {
    super.dispose();
    this.router.dispose();
    disposeRecord(this.#lastRouting);
    this.#lastRouting = null;
    this.#disposeExpertOutputs();
    this.#disabledMask?.dispose();
    this.#disabledMask = null;
  }

  #recordExpertOutputs(expertOut: Tensor, offsets: Tensor): void {
    const keep = (t: Tensor): Tensor => {
      const view = t.detach();
      view.persistent = true;
      return view;
    };
    this.#disposeExpertOutputs();
    this.#lastExpertOutputs = { outputs: keep(expertOut), offsets: keep(offsets) };
  }

  #disposeExpertOutputs(): void {
    this.#lastExpertOutputs?.outputs.dispose();
    this.#lastExpertOutputs?.offsets.dispose();
    this.#lastExpertOutputs = null;
  }

  #record(
    plan: ReturnType<Router["route"]>,
    kept: Tensor,
    n: number,
    capacity: number | null,
  ): void {
    const keep = (t: Tensor): Tensor => {
      const view = t.detach();
      view.persistent = true;
      return view;
    };
    const record = noGrad((): RoutingRecord => ({
      numTokens: n,
      numExperts: this.options.routedExperts,
      slotsPerToken: plan.slotsPerToken,
      tokens: keep(plan.tokens),
      routedExperts: keep(plan.experts),
      keptExperts: keep(kept),
      weights: keep(plan.weights),
      probs: plan.probs === null ? null : keep(plan.probs),
      auxLosses: Object.fromEntries(
        Object.entries(plan.auxLosses).map(([name, loss]) => [name, keep(loss)]),
      ),
      capacity,
    }));
    disposeRecord(this.#lastRouting);
    this.#lastRouting = record;
  }
}

function disposeRecord(record: RoutingRecord | null): void {
  if (record === null) return;
  for (const t of [record.tokens, record.routedExperts, record.keptExperts, record.weights]) {
    t.dispose();
  }
  record.probs?.dispose();
  for (const loss of Object.values(record.auxLosses)) loss.dispose();
}
