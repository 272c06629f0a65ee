/**
 * The `Backend` interface: the only layer that touches memory and runs kernels.
 *
 * Every tensor op in moelab bottoms out in one of these methods. The WebGPU backend records them
 * as compute dispatches; the CPU backend runs them as plain loops in float32 or float64 and is the
 * oracle that kernel tests compare against.
 *
 * Conventions shared by every implementation:
 * - A `Storage` is a flat, contiguous, row-major buffer of `size` elements. Shapes live in the
 *   tensor layer; ops receive the sizes they need as plain numbers.
 * - Every op allocates and returns new storages, except `copyAxis`, `fill` and `adamw`, which
 *   write into storages they are given.
 * - Reductions visit elements in a fixed order, so results are reproducible run to run.
 * - Storages are released explicitly; `liveStorages()` counts those allocated and not released.
 * - Ops take f32 storages unless stated: `transpose`, `copyAxis` and `fill` also take i32, and
 *   ids and targets are i32. Scalars produced by ops (losses, counts, norms) are one-element f32.
 * - An id or target outside its range is invalid input. The CPU backend throws; the WebGPU
 *   backend cannot check without a readback, so callers validate ids on the host.
 */

export type DType = "f32" | "i32";

/** An opaque handle to backend memory holding `size` elements of `dtype`. */
export interface Storage {
  readonly size: number;
  readonly dtype: DType;
}

/** Host arrays accepted by `upload` and returned by `read`. */
export type HostArray = Float32Array | Float64Array | Int32Array;

export type UnaryOp =
  | "neg"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "tanh"
  | "relu"
  | "gelu" // tanh approximation, as in GPT-2
  | "silu"
  | "sigmoid"
  | "square"
  | "pow" // x ** param
  | "scale" // x * param
  | "addScalar"; // x + param

export type BinaryOp = "add" | "sub" | "mul" | "div";

export type ReduceOp = "sum" | "max";

/** Sizes of a batched matrix product `C[b] = op(A[b]) · op(B[b])`, with `C[b]` of shape m×n. */
export interface MatmulSpec {
  batch: number;
  m: number;
  n: number;
  k: number;
  /** A is stored as k×m instead of m×k. */
  transA: boolean;
  /** B is stored as n×k instead of k×n. */
  transB: boolean;
  /** When false, the single matrix A is used for every batch entry. */
  aBatched: boolean;
  /** When false, the single matrix B is used for every batch entry. */
  bBatched: boolean;
}

/**
 * A block copy along one axis: the array is viewed as [outer, axisLen, inner], and elements
 * `src[o, srcStart + j, i]` go to `dst[o, dstStart + j, i]` for j < len. Slice and concat, forward
 * and backward, are all built from this.
 */
export interface AxisCopySpec {
  outer: number;
  inner: number;
  srcAxisLen: number;
  dstAxisLen: number;
  srcStart: number;
  dstStart: number;
  len: number;
}

/** Hyperparameters of one AdamW step; `step` counts from 1 and drives bias correction. */
export interface AdamWSpec {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

/**
 * Sizes and options of fused causal attention (`Backend.attention`). Query i of head h sees key j
 * when j ≤ i, and (j < initialKeys or i − j < window of h, unless that window is 0), and the key is
 * not masked, and i < keyEnds[b, kvHead, j] when keyEnds is given.
 */
export interface AttentionSpec {
  batch: number;
  /** Query heads H. */
  heads: number;
  /** Key and value heads; divides `heads`, and query head h reads head ⌊h / (heads / kvHeads)⌋. */
  kvHeads: number;
  seqLen: number;
  /** Size of each query and key vector. */
  headDim: number;
  /** Size of each value and output vector. */
  valueDim: number;
  /** Factor on q·k before any bias is added, usually 1/√headDim. */
  scale: number;
  /** Sliding window in keys (query i sees i − window < j ≤ i); 0 means none. `windows` overrides. */
  window: number;
  /** Keys before this position stay visible to every later query, whatever the window. */
  initialKeys: number;
  /** Layout of `bias`: "keys" is [B, kvHeads, T] (one logit per key), "full" is [B, H, T, T]. */
  biasKind: "none" | "keys" | "full";
}

/**
 * Storages of fused attention. q is [B, H, T, headDim]; k is [B, kvHeads, T, headDim]; v is
 * [B, kvHeads, T, valueDim]. The optional ones are absent or null when unused.
 */
export interface AttentionInputs {
  q: Storage;
  k: Storage;
  v: Storage;
  /** Additive logits in the layout that `spec.biasKind` names. */
  bias?: Storage | null;
  /** f32 [H]: ALiBi slopes; the logit of (i, j) gains −slope·(i − j). */
  alibiSlopes?: Storage | null;
  /** i32 [H]: a window per head (0 means none), in place of `spec.window`. */
  windows?: Storage | null;
  /** f32 [B, T]: a key whose entry is 0 is hidden from every query. */
  keyMask?: Storage | null;
  /** i32 [B, kvHeads, T]: key j is visible only to queries i < keyEnds[b, kvHead, j]. */
  keyEnds?: Storage | null;
  /** f32 [B, H, T]: the logit of a virtual key with value 0 added to each query's softmax. */
  sink?: Storage | null;
}

/** Gradients of fused attention; `dbias` and `dsink` are null when the input was absent. */
export interface AttentionGrads {
  dq: Storage;
  dk: Storage;
  dv: Storage;
  dbias: Storage | null;
  dsink: Storage | null;
}

export interface Backend {
  /** "webgpu" or "cpu". */
  readonly name: string;
  /** A one-line description of the device, recorded in every run's summary. */
  readonly description: string;
  /** Float elements are computed in this precision. The WebGPU backend is always "f32". */
  readonly precision: "f32" | "f64";

  // --- memory --------------------------------------------------------------------------------

  /** Allocates `size` elements. Contents are unspecified (NaN when poisoning is on). */
  alloc(size: number, dtype: DType): Storage;
  /** Copies host data into a new storage. Float data may be any float array. */
  upload(data: HostArray, dtype: DType): Storage;
  /** Waits for pending work and copies a storage back to the host. */
  read(storage: Storage): Promise<HostArray>;
  /** Returns a storage to the pool. Using it afterwards is an error. */
  release(storage: Storage): void;
  /** Number of storages allocated and not yet released. */
  liveStorages(): number;
  /** Submits recorded work, if the backend records any. */
  flush(): void;
  /** Frees every resource; the backend is unusable afterwards. */
  dispose(): Promise<void>;

  // --- elementwise ----------------------------------------------------------------------------

  /** `param` is required by "pow", "scale" and "addScalar" and ignored by the others. */
  unary(op: UnaryOp, x: Storage, param?: number): Storage;
  /** Gradient of `unary(op, x, param)` with respect to x, given the output gradient dy. */
  unaryBackward(op: UnaryOp, x: Storage, dy: Storage, param?: number): Storage;
  /**
   * Elementwise `a op b` with NumPy broadcasting. Shapes are given right-aligned to `outShape`'s
   * rank (the tensor layer pads them with leading 1s). Rank is at most 6.
   */
  binary(
    op: BinaryOp,
    a: Storage,
    aShape: readonly number[],
    b: Storage,
    bShape: readonly number[],
    outShape: readonly number[],
  ): Storage;
  /** Sums x of shape `shape` over the axes where `outShape` is 1 (same rank): undoes broadcasting. */
  sumToShape(x: Storage, shape: readonly number[], outShape: readonly number[]): Storage;

  // --- reductions -----------------------------------------------------------------------------

  /** Reduces x viewed as [outer, n, inner] along the middle axis to [outer, inner]. */
  reduce(op: ReduceOp, x: Storage, outer: number, n: number, inner: number): Storage;
  /** Gradient of a max reduction: dy goes to the first maximal element of each slice. */
  maxBackward(x: Storage, dy: Storage, outer: number, n: number, inner: number): Storage;

  // --- linear algebra -------------------------------------------------------------------------

  matmul(a: Storage, b: Storage, spec: MatmulSpec): Storage;

  // --- normalisation and softmax --------------------------------------------------------------

  /**
   * Softmax along rows of length `cols`. With `causalQueries` = T > 0 the rows are queries of
   * T-row blocks (rows must be a multiple of T), and row r masks key columns
   * c > (r mod T) + (cols − T). Fully masked rows are 0.
   */
  softmax(x: Storage, rows: number, cols: number, causalQueries: number): Storage;
  /** dx = y ⊙ (dy − Σ dy ⊙ y), per row. */
  softmaxBackward(y: Storage, dy: Storage, rows: number, cols: number): Storage;

  /** LayerNorm of each row; returns the output and the per-row mean and 1/σ for backward. */
  layerNorm(
    x: Storage,
    gamma: Storage,
    beta: Storage,
    rows: number,
    cols: number,
    eps: number,
  ): { y: Storage; mean: Storage; rstd: Storage };
  layerNormBackward(
    x: Storage,
    gamma: Storage,
    mean: Storage,
    rstd: Storage,
    dy: Storage,
    rows: number,
    cols: number,
  ): { dx: Storage; dgamma: Storage; dbeta: Storage };

  /** RMSNorm of each row: y = x / sqrt(mean(x²) + eps) ⊙ gamma. */
  rmsNorm(
    x: Storage,
    gamma: Storage,
    rows: number,
    cols: number,
    eps: number,
  ): { y: Storage; rstd: Storage };
  rmsNormBackward(
    x: Storage,
    gamma: Storage,
    rstd: Storage,
    dy: Storage,
    rows: number,
    cols: number,
  ): { dx: Storage; dgamma: Storage };

  // --- indexing -------------------------------------------------------------------------------

  /** Rows of `table` ([vocab, dim]) picked by i32 `ids` ([n]); returns [n, dim]. */
  gather(table: Storage, ids: Storage, n: number, vocab: number, dim: number): Storage;
  /** Sums rows of dy ([n, dim]) into a fresh [vocab, dim] by `ids`: the gradient of `gather`. */
  scatterAdd(dy: Storage, ids: Storage, n: number, vocab: number, dim: number): Storage;

  // --- mixture of experts ---------------------------------------------------------------------
  //
  // A dispatch plan is a list of `count` assignments (token, expert, weight); an expert id outside
  // [0, numExperts), conventionally −1, marks an empty or dropped assignment. Negative row and
  // column indices select nothing: gathers give 0 there and scatters skip them. An index at or
  // past its limit is invalid input (the CPU backend throws; the WebGPU backend gives 0 or skips).

  /**
   * The k largest entries of each row of scores [rows, cols], largest first. Equal scores rank
   * the lower column first, so [0.5, 0.5, 0.5, 0.1] with k = 2 gives columns 0 then 1. NaN is
   * never selected; when only NaN is left, the remaining picks are index −1 with value NaN.
   * Returns i32 `indices` and f32 `values`, both [rows, k].
   */
  topK(scores: Storage, rows: number, cols: number, k: number): {
    indices: Storage;
    values: Storage;
  };
  /** Entries `x[r, indices[r, j]]` of x [rows, cols] (f32 or i32) as [rows, k]. */
  gatherColumns(x: Storage, indices: Storage, rows: number, cols: number, k: number): Storage;
  /**
   * Sums dy [rows, k] into a zero [rows, cols] at columns `indices[r, j]`, in j order: the
   * gradient of `gatherColumns` and of topK's values.
   */
  scatterColumns(dy: Storage, indices: Storage, rows: number, cols: number, k: number): Storage;
  /** Rows `x[index[i]]` of x [n, cols] (f32 or i32) as [m, cols]. */
  gatherRows(x: Storage, index: Storage, n: number, m: number, cols: number): Storage;
  /**
   * Sums the rows of dy [m, cols] into a zero [n, cols] at rows `index[i]`, in increasing i:
   * the gradient of `gatherRows`.
   */
  scatterAddRows(dy: Storage, index: Storage, m: number, n: number, cols: number): Storage;
  /**
   * Applies an expert capacity to i32 expert ids [count]: ranks the assignments of each expert by
   * f32 `priority` (higher first; null means position order), breaking ties by position, and
   * returns the ids with −1 wherever the rank is ≥ capacity. Empty assignments stay −1.
   */
  dropOverCapacity(
    experts: Storage,
    priority: Storage | null,
    count: number,
    numExperts: number,
    capacity: number,
  ): Storage;
  /**
   * Stable counting sort of assignments by expert id ([count] i32). Returns i32 `offsets`
   * [numExperts + 1] (the exclusive prefix sum of the per-expert counts), `order` [count] (the
   * assignment at each sorted row, −1 at rows ≥ offsets[numExperts]) and `positions` [count]
   * (the sorted row of each assignment, −1 for empty ones), so `order` and `positions` are
   * inverse permutations on the kept assignments.
   */
  sortByExpert(
    experts: Storage,
    count: number,
    numExperts: number,
  ): { order: Storage; positions: Storage; offsets: Storage };
  /**
   * Per-expert products over contiguous row groups: row r of x [rows, dIn] in group e (offsets[e]
   * ≤ r < offsets[e + 1]) becomes `W_e · x[r]`, with w [numExperts, dOut, dIn] stored [out, in]
   * per expert. Rows ≥ offsets[numExperts] are 0; empty groups cost no products.
   */
  groupedMatmul(
    x: Storage,
    w: Storage,
    offsets: Storage,
    rows: number,
    numExperts: number,
    dIn: number,
    dOut: number,
  ): Storage;
  /**
   * The weight gradient of `groupedMatmul`: dW_e = Σ over the rows r of group e, in row order, of
   * dy[r] ⊗ x[r], as [numExperts, dOut, dIn]; empty groups get zeros.
   */
  groupedMatmulWeightGrad(
    dy: Storage,
    x: Storage,
    offsets: Storage,
    rows: number,
    numExperts: number,
    dIn: number,
    dOut: number,
  ): Storage;

  // --- layout ---------------------------------------------------------------------------------

  /** Swaps two axes of a contiguous array of shape `shape` (rank ≤ 6). */
  transpose(x: Storage, shape: readonly number[], axis1: number, axis2: number): Storage;
  /** Copies a block along one axis from src into dst, in place. */
  copyAxis(src: Storage, dst: Storage, spec: AxisCopySpec): void;
  /** Sets every element of a storage to `value`, in place. */
  fill(dst: Storage, value: number): void;

  // --- model-specific fused ops ---------------------------------------------------------------

  /**
   * Rotary position embedding on x viewed as [outer, seqLen, dim] with the rotate-half pairing
   * (i, i + dim/2). `cos` and `sin` are [seqLen, dim/2]. `inverse` rotates by −θ, which is the
   * backward pass.
   */
  rope(
    x: Storage,
    cos: Storage,
    sin: Storage,
    outer: number,
    seqLen: number,
    dim: number,
    inverse: boolean,
  ): Storage;

  /**
   * Softmax cross-entropy of logits [rows, cols] against i32 targets [rows]. Rows whose target is
   * `ignoreIndex` contribute nothing. `loss` is the mean over counted rows (0 when none count),
   * `lse` the per-row log-sum-exp (computed for ignored rows too) and `count` the number of
   * counted rows as one f32 element, both for backward.
   */
  crossEntropy(
    logits: Storage,
    targets: Storage,
    rows: number,
    cols: number,
    ignoreIndex: number,
  ): { loss: Storage; lse: Storage; count: Storage };
  /** dlogits = (softmax − onehot) · dy / max(count, 1) on counted rows, 0 on ignored ones. */
  crossEntropyBackward(
    logits: Storage,
    targets: Storage,
    lse: Storage,
    count: Storage,
    dy: Storage,
    rows: number,
    cols: number,
    ignoreIndex: number,
  ): Storage;

  // --- attention ------------------------------------------------------------------------------

  /**
   * Fused causal attention in the manner of FlashAttention: each query row keeps a running maximum
   * and sum over its visible keys, so no T×T matrix is stored. Returns `out` [B, H, T, valueDim]
   * and the per-row log-sum-exp `lse` [B, H, T] (sink included) for backward. A row with no
   * visible key and no sink has output 0 and lse 0.
   */
  attention(inputs: AttentionInputs, spec: AttentionSpec): { out: Storage; lse: Storage };
  /**
   * Gradients of `attention` from the output gradient `dout`, recomputing probabilities from
   * `lse`. A fully masked row contributes zero to every gradient.
   */
  attentionBackward(
    inputs: AttentionInputs,
    out: Storage,
    lse: Storage,
    dout: Storage,
    spec: AttentionSpec,
  ): AttentionGrads;
  /**
   * The probabilities of `attention` as [B, H, T, T] (v is not read): 0 on hidden keys, and rows
   * sum to 1 minus the sink's share. For probes and routers; it has no backward.
   */
  attentionProbs(inputs: AttentionInputs, spec: AttentionSpec): Storage;
  /**
   * For dynamic mask attention: given per-key scores [rows, seqLen], returns i32 ends such that
   * query i keeps key j (j ≤ i) exactly when i < ends[j], which keeps, for every query, the
   * `keep` highest-scoring keys among 0..i, ties going to the later key.
   */
  attentionKeepEnds(scores: Storage, rows: number, seqLen: number, keep: number): Storage;

  // --- optimizer ------------------------------------------------------------------------------

  /**
   * Muon's momentum step in place (Jordan et al., 2024): g = grad · gradScale, m ← momentum·m + g,
   * and returns the direction to orthogonalise: g + momentum·m with Nesterov, else m.
   */
  muonMomentum(
    m: Storage,
    grad: Storage,
    gradScale: Storage | null,
    momentum: number,
    nesterov: boolean,
  ): Storage;

  /** Sum of squares of all elements, as a storage of one element. */
  sumSquares(x: Storage): Storage;
  /**
   * Gradient-clipping coefficient from a squared global norm (one element):
   * min(1, maxNorm / (sqrt(normSq) + 1e-6)), as a storage of one element.
   */
  clipCoefficient(normSq: Storage, maxNorm: number): Storage;
  /**
   * One AdamW step in place on param, m and v (PyTorch semantics: decoupled weight decay
   * p ← p − lr·wd·p, then p ← p − lr · m̂ / (sqrt(v̂) + eps)). The gradient is multiplied by the
   * one-element `gradScale` first when it is given (clipping without a readback).
   */
  adamw(
    param: Storage,
    grad: Storage,
    m: Storage,
    v: Storage,
    gradScale: Storage | null,
    spec: AdamWSpec,
  ): void;
}

/** Raised when a backend cannot be created, with the reason and what to do instead. */
export class BackendUnavailableError extends Error {
  override name = "BackendUnavailableError";
}
