/**
 * ConceptMoE token-to-concept compression (Huang et al., arXiv 2601.21420, after the authors'
 * `ConceptMoE_demo.py`). A boundary scorer cuts each sequence into chunks, and the middle
 * ("concept") blocks of the decoder run on one state per chunk. The result is spread back to the
 * tokens.
 *
 * 1. Boundary probability (H-Net dynamic chunking): a_t = cos(W_q h_{t−1}, W_k h_t) and
 *    p_t = clip((1 − a_t)/2, 0, 1), with p_0 = 1 so every sequence starts a chunk.
 * 2. Decision: in training b_t ~ Bernoulli(sharpen(p_t)) with sharpen(p) = p^{1/r} above 0.5 and
 *    1 − (1 − p)^{1/r} otherwise; without gradients (evaluation) b_t = 1[p_t ≥ 0.5].
 * 3. Ratio loss toward 1 boundary per R tokens: with F = mean b and G = mean p,
 *    L = R/(R−1) · ((R−1)·F·G + (1−F)·(1−G)); its gradient reaches p through G only.
 * 4. Merge: concept j is the state at the j-th boundary (`select`) or the sum of its chunk (`sum`).
 * 5. Dechunk: z_j = (1 − q_j)·z_{j−1} + q_j·ĉ_j over the concept outputs ĉ, with q_t = p_t at a
 *    boundary and 1 − p_t elsewhere; token t receives the z of its latest concept and
 *    h'_t = h_t + z_{κ(t)}·STE(q_t), where STE is 1 forward and passes the gradient to q_t.
 *
 * Shapes stay fixed so nothing is read back to the host: each sequence keeps at most
 * L_c = min(T, ⌈capacityFactor·T/R⌉) concepts. Boundaries past the L_c-th are dropped (their
 * tokens join the previous concept), and sequences with fewer boundaries are padded with zero
 * concepts at the end. Merge and broadcast are batched products with 0/1 assignment matrices
 * [B, T, L_c], built from i32 top-K indices and integer arithmetic in f32 (exact below 2^24).
 *
 * Causality with `merge: "select"`: boundary t depends on h_{t−1} and h_t, a kept boundary on the
 * count of earlier boundaries, concept j on tokens up to its boundary, the causal concept blocks
 * on concepts up to j, and token t only on concepts that start at or before t. Padded concepts sit
 * after every real one, so causal attention keeps them from real concepts. `merge: "sum"` puts the
 * later tokens of a chunk into the concept its earlier tokens read, so it leaks the future into a
 * causal language model; the decoder warns when it is chosen.
 */

import type { Backend } from "../../kernels/backend.ts";
import {
  add,
  addScalar,
  concat,
  gatherColumns,
  matmul,
  meanAll,
  mul,
  neg,
  noGrad,
  pow,
  relu,
  type Rng,
  rsqrt,
  scale,
  slice,
  sub,
  sum,
  Tensor,
  topK,
} from "../../tensor/mod.ts";
import { ShapeError } from "../../tensor/shape.ts";
import { Linear } from "../linear.ts";
import { Module } from "../module.ts";

/** `model.concept`: the compression of the decoder's middle blocks. */
export interface ConceptSpec {
  /** R: target tokens per concept, above 1. */
  ratio: number;
  /** Blocks before chunking that run on every token (default 1). */
  encoderLayers?: number;
  /** Blocks after dechunking that run on every token (default 1). */
  decoderLayers?: number;
  /** Concept state: the boundary token's state (`select`, causal) or its chunk's sum (`sum`). */
  merge?: "select" | "sum";
  /** r of the sharpening before sampling boundaries in training (default 6). */
  sharpenRate?: number;
  /** Multiplier of the ratio loss (default 0.03). */
  ratioLossWeight?: number;
  /** Concept slots per sequence as a multiple of T/R (default 1, which matches compute). */
  capacityFactor?: number;
  /**
   * Experts per concept in the concept blocks, counted before segmentation like `moe.topK`.
   * Null or absent means round(R · moe.topK), which keeps the activated expert FLOPs.
   */
  topK?: number | null;
}

/** A resolved `ConceptSpec` with every default filled in. */
export type ResolvedConcept = Required<ConceptSpec>;

/** Fills the defaults of `spec` and checks it against the model depth. */
export function resolveConcept(spec: ConceptSpec, numLayers: number): ResolvedConcept {
  const resolved: ResolvedConcept = {
    encoderLayers: 1,
    decoderLayers: 1,
    merge: "select",
    sharpenRate: 6,
    ratioLossWeight: 0.03,
    capacityFactor: 1,
    topK: null,
    ...spec,
  };
  if (!(resolved.ratio > 1)) {
    throw new Error(`model.concept.ratio is ${resolved.ratio} but must be above 1`);
  }
  const outer = resolved.encoderLayers + resolved.decoderLayers;
  if (outer >= numLayers) {
    throw new Error(
      `model.concept: encoderLayers ${resolved.encoderLayers} + decoderLayers ` +
        `${resolved.decoderLayers} leave no concept block out of numLayers ${numLayers}; ` +
        `lower them or add layers`,
    );
  }
  return resolved;
}

/** The chunking of one batch: constant assignment matrices plus the differentiable q. */
export interface ChunkPlan {
  /** [B, T, L_c]: 1 where token t is the kept boundary that starts concept j. */
  starts: Tensor;
  /** [B, T, L_c]: 1 where concept j is the latest one starting at or before token t. */
  membership: Tensor;
  /** [B, T, 1]: 1 at kept boundaries. */
  kept: Tensor;
  /** [B, T, 1]: confidence of the decision, p at a kept boundary and 1 − p elsewhere. */
  confidence: Tensor;
  /** [B, L_c, 1]: 1 for real concepts, 0 for padding. */
  valid: Tensor;
}

/** Computes the concept slots L_c of a sequence of `seqLen` tokens. */
export function conceptSlots(seqLen: number, ratio: number, capacityFactor: number): number {
  return Math.min(seqLen, Math.ceil((capacityFactor * seqLen) / ratio));
}

/** H-Net's sharpening of boundary probabilities before sampling; `rate` is r. */
export function sharpen(p: Tensor, rate: number): Tensor {
  const high = stepAtLeast(addScalar(p, -0.5));
  const up = pow(relu(p), 1 / rate);
  const down = addScalar(neg(pow(relu(addScalar(neg(p), 1)), 1 / rate)), 1);
  return add(mul(high, up), mul(addScalar(neg(high), 1), down));
}

/**
 * 1 where x ≥ 0 and 0 elsewhere, element by element, without gradient. A top-1 over the pairs
 * (x, 0) yields an i32 index that selects 1 or 0; the ops have no comparison of their own.
 */
export function stepAtLeast(x: Tensor): Tensor {
  return noGrad(() => {
    const rows = x.size;
    const flat = x.reshape([rows, 1]);
    const pairs = concat([flat, Tensor.zeros(x.backend, [rows, 1])], 1);
    const { indices } = topK(pairs, 1);
    const table = new Float32Array(rows * 2);
    for (let i = 0; i < rows; i++) table[2 * i] = 1;
    const values = Tensor.fromArray(x.backend, table, [rows, 2], "f32");
    return gatherColumns(values, indices).reshape(x.shape);
  });
}

/** ConceptMoE's ratio loss without its weight, for boundaries b and probabilities p. */
export function ratioLoss(boundaries: Tensor, probs: Tensor, ratio: number): Tensor {
  const f = meanAll(boundaries.detach());
  const g = meanAll(probs);
  const together = scale(mul(f, g), ratio - 1);
  const apart = mul(addScalar(neg(f), 1), addScalar(neg(g), 1));
  return scale(add(together, apart), ratio / (ratio - 1));
}

/** Element-wise |x| from two ReLUs (exact for the integer differences used below). */
function absolute(x: Tensor): Tensor {
  return add(relu(x), relu(neg(x)));
}

/** Constant [1, n] (or [1, 1, n] / [1, n, 1] by `shape`) holding 0, 1, ..., n − 1. */
function positions(backend: Backend, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return Tensor.fromArray(backend, Float32Array.from({ length: n }, (_, i) => i), shape, "f32");
}

/**
 * Builds the chunking of boundary decisions `boundaries` [B, T] (0/1, constant) with
 * probabilities `probs` [B, T] into `slots` concepts per sequence.
 */
export function planChunks(boundaries: Tensor, probs: Tensor, slots: number): ChunkPlan {
  if (boundaries.rank !== 2 || probs.rank !== 2 || boundaries.shape.join() !== probs.shape.join()) {
    throw new ShapeError(
      `planChunks: boundaries and probs must both be [batch, seqLen], got ` +
        `${boundaries.describe()} and ${probs.describe()}`,
    );
  }
  const [batch, seqLen] = boundaries.shape;
  const backend = boundaries.backend;

  const { starts, membership, kept, valid } = noGrad(() => {
    // Boundaries rank first, in position order, then the other tokens fill unused slots.
    const tokenPositions = positions(backend, [1, seqLen]);
    const order = sub(scale(boundaries, 2 * seqLen), tokenPositions);
    const { indices } = topK(order, slots);
    const allPositions = add(Tensor.zeros(backend, [batch, seqLen]), tokenPositions);
    const conceptStart = gatherColumns(allPositions, indices).reshape([batch, 1, slots]);
    const valid = gatherColumns(boundaries, indices).reshape([batch, 1, slots]);

    const offset = sub(positions(backend, [1, seqLen, 1]), conceptStart);
    const starts = mul(relu(addScalar(neg(absolute(offset)), 1)), valid);
    const started = mul(sub(relu(addScalar(offset, 1)), relu(offset)), valid);
    const latest = addScalar(sum(started, -1, true), -1);
    const index = sub(latest, positions(backend, [1, 1, slots]));
    const membership = relu(addScalar(neg(absolute(index)), 1));
    const kept = sum(starts, -1, true);
    return { starts, membership, kept, valid: valid.reshape([batch, slots, 1]) };
  });

  const p = probs.reshape([batch, seqLen, 1]);
  const confidence = add(mul(kept, p), mul(addScalar(neg(kept), 1), addScalar(neg(p), 1)));
  return { starts, membership, kept, confidence, valid };
}

/** Merges token states h [B, T, d] into concept states [B, L_c, d]. */
export function mergeChunks(h: Tensor, plan: ChunkPlan, merge: "select" | "sum"): Tensor {
  return matmul(merge === "select" ? plan.starts : plan.membership, h, { transA: true });
}

/**
 * Token states [B, T, d] from concept outputs [B, L_c, d]: the EMA over concepts, broadcast to
 * each token's latest concept and added to h with the straight-through confidence. With
 * `straightThrough` false the broadcast is added without it, so the gradient is the exact
 * derivative (for finite-difference checks) and q gets none from the residual.
 */
export function dechunk(
  h: Tensor,
  conceptOut: Tensor,
  plan: ChunkPlan,
  straightThrough = true,
): Tensor {
  const [batch, slots, dModel] = conceptOut.shape;
  const q = matmul(plan.starts, plan.confidence, { transA: true });

  // TODO: a parallel prefix scan over (1 − q, q·ĉ) in place of this loop of L_c steps.
  const smoothed: Tensor[] = [];
  let previous: Tensor | null = null;
  for (let j = 0; j < slots; j++) {
    const qj = slice(q, 1, j, j + 1);
    const update = mul(qj, slice(conceptOut, 1, j, j + 1));
    previous = previous === null ? update : add(mul(addScalar(neg(qj), 1), previous), update);
    smoothed.push(previous);
  }
  const z = slots === 1 ? smoothed[0] : concat(smoothed, 1);
  if (z.shape.join() !== [batch, slots, dModel].join()) {
    throw new ShapeError(
      `dechunk: EMA gave ${z.describe()}, expected [${batch}, ${slots}, ${dModel}]`,
    );
  }

  const broadcast = matmul(plan.membership, z);
  if (!straightThrough) return add(h, broadcast);
  const ste = addScalar(sub(plan.confidence, plan.confidence.detach()), 1);
  return add(h, mul(broadcast, ste));
}

/**
 * Boundary probabilities p [B, T] from projected states W_q·h and W_k·h [B, T, d]:
 * p_t = clip((1 − cos(W_q h_{t−1}, W_k h_t))/2, 0, 1) and p_0 = 1.
 */
export function boundaryProbsOf(queries: Tensor, keys: Tensor): Tensor {
  const [batch, seqLen, dModel] = queries.shape;
  const backend = queries.backend;
  const q = queries;
  const k = keys;
  const previous = seqLen === 1
    ? Tensor.zeros(backend, [batch, 1, dModel])
    : concat([Tensor.zeros(backend, [batch, 1, dModel]), slice(q, 1, 0, seqLen - 1)], 1);

  // The 1e-12 keeps the first position, whose previous state is zero, at cosine 0.
  const dot = sum(mul(previous, k), -1);
  const norms = mul(
    rsqrt(addScalar(sum(mul(previous, previous), -1), 1e-12)),
    rsqrt(addScalar(sum(mul(k, k), -1), 1e-12)),
  );
  const cosine = mul(dot, norms);
  const raw = scale(addScalar(neg(cosine), 1), 0.5);
  const clipped = relu(sub(raw, relu(addScalar(raw, -1))));

  const first = new Float32Array(seqLen);
  first[0] = 1;
  const firstMask = Tensor.fromArray(backend, first, [1, seqLen], "f32");
  return add(mul(clipped, addScalar(neg(firstMask), 1)), firstMask);
}

/** Boundary statistics of the latest forward, detached. */
export interface ConceptStats {
  /** F: the fraction of tokens sampled (or thresholded) as boundaries. */
  boundaryRate: Tensor;
  /** Mean kept concepts per sequence; T divided by it is the realised compression. */
  conceptsPerSequence: Tensor;
  seqLen: number;
}

/** The learned boundary scorer and the chunk/dechunk steps around the concept blocks. */
export class ConceptChunker extends Module {
  readonly query: Linear;
  readonly key: Linear;
  #stats: ConceptStats | null = null;

  constructor(
    backend: Backend,
    readonly rng: Rng,
    dModel: number,
    initStd: number,
    readonly spec: ResolvedConcept,
  ) {
    super();
    this.query = this.addModule(
      "query",
      new Linear(backend, rng, dModel, dModel, { initStd, bias: false }),
    );
    this.key = this.addModule(
      "key",
      new Linear(backend, rng, dModel, dModel, { initStd, bias: false }),
    );
  }

  /** Boundary probabilities p [B, T] of states h [B, T, d]; p_0 = 1. */
  boundaryProbs(h: Tensor): Tensor {
    if (h.rank !== 3) {
      throw new ShapeError(`ConceptChunker: h must be [B, T, d], got ${h.describe()}`);
    }
    return boundaryProbsOf(this.query.forward(h), this.key.forward(h));
  }

  /** Boundaries [B, T] sampled from Bernoulli(sharpen(p)) with the chunker's RNG. */
  sampleBoundaries(probs: Tensor): Tensor {
    return noGrad(() => {
      const uniform = Float32Array.from({ length: probs.size }, () => this.rng.uniform());
      const draws = Tensor.fromArray(probs.backend, uniform, probs.shape, "f32");
      return stepAtLeast(sub(sharpen(probs, this.spec.sharpenRate), draws));
    });
  }

  /**
   * Chunks h [B, T, d]: returns the concept states [B, L_c, d], the plan for `dechunk`, and the
   * weighted ratio loss.
   */
  chunk(h: Tensor, training: boolean): { concepts: Tensor; plan: ChunkPlan; loss: Tensor } {
    const seqLen = h.shape[1];
    const probs = this.boundaryProbs(h);
    const boundaries = training
      ? this.sampleBoundaries(probs)
      : noGrad(() => stepAtLeast(addScalar(probs, -0.5)));
    const slots = conceptSlots(seqLen, this.spec.ratio, this.spec.capacityFactor);
    const plan = planChunks(boundaries, probs, slots);
    const concepts = mergeChunks(h, plan, this.spec.merge);
    const loss = scale(ratioLoss(boundaries, probs, this.spec.ratio), this.spec.ratioLossWeight);
    this.#record(boundaries, plan, seqLen);
    return { concepts, plan, loss };
  }

  /** Boundary statistics of the latest forward, or null before the first. */
  get stats(): ConceptStats | null {
    return this.#stats;
  }

  #record(boundaries: Tensor, plan: ChunkPlan, seqLen: number): void {
    const stats = noGrad(() => ({
      boundaryRate: meanAll(boundaries).detach(),
      conceptsPerSequence: meanAll(sum(plan.valid, 1)).detach(),
      seqLen,
    }));
    stats.boundaryRate.persistent = true;
    stats.conceptsPerSequence.persistent = true;
    this.#disposeStats();
    this.#stats = stats;
  }

  #disposeStats(): void {
    this.#stats?.boundaryRate.dispose();
    this.#stats?.conceptsPerSequence.dispose();
    this.#stats = null;
  }

  override dispose(): void {
    super.dispose();
    this.#disposeStats();
  }
}
