/**
 * Fused causal attention on the CPU: the reference that the WebGPU kernels are tested against.
 *
 * Each query row gathers the logits of its visible keys, takes a softmax with the maximum
 * subtracted (the sink logit, when present, joins the denominator) and sums the values. Backward
 * recomputes the probabilities from the saved log-sum-exp, following
 * dP = dO·Vᵀ, D_i = dO_i·O_i and dS = P ⊙ (dP − D).
 */

import type { AttentionGrads, AttentionInputs, AttentionSpec, Storage } from "../backend.ts";
import { checkCount, type CpuMemory, type FloatArray } from "./storage.ts";

/** The inputs of one call, read and size-checked once. */
interface Views {
  q: FloatArray;
  k: FloatArray;
  v: FloatArray | null;
  bias: FloatArray | null;
  alibi: FloatArray | null;
  windows: Int32Array | null;
  keyMask: FloatArray | null;
  keyEnds: Int32Array | null;
  sink: FloatArray | null;
}

/** Checks the spec and returns views of the inputs; `v` is skipped for `attentionProbs`. */
function readInputs(
  mem: CpuMemory,
  op: string,
  inputs: AttentionInputs,
  spec: AttentionSpec,
  withValues: boolean,
): Views {
  checkAttentionSpec(op, spec);
  const { batch: b, heads: h, kvHeads: hk, seqLen: t, headDim: dk, valueDim: dv } = spec;
  const biasSize = spec.biasKind === "keys" ? b * hk * t : b * h * t * t;
  if (spec.biasKind !== "none" && !inputs.bias) {
    throw new Error(`${op}: biasKind is "${spec.biasKind}" but no bias was given`);
  }
  return {
    q: mem.floats(op, "q", inputs.q, b * h * t * dk),
    k: mem.floats(op, "k", inputs.k, b * hk * t * dk),
    v: withValues ? mem.floats(op, "v", inputs.v, b * hk * t * dv) : null,
    bias: spec.biasKind === "none" ? null : mem.floats(op, "bias", inputs.bias!, biasSize),
    alibi: inputs.alibiSlopes ? mem.floats(op, "alibiSlopes", inputs.alibiSlopes, h) : null,
    windows: inputs.windows ? mem.ints(op, "windows", inputs.windows, h) : null,
    keyMask: inputs.keyMask ? mem.floats(op, "keyMask", inputs.keyMask, b * t) : null,
    keyEnds: inputs.keyEnds ? mem.ints(op, "keyEnds", inputs.keyEnds, b * hk * t) : null,
    sink: inputs.sink ? mem.floats(op, "sink", inputs.sink, b * h * t) : null,
  };
}

/** Throws on sizes that do not describe a valid attention call, naming the value and the fix. */
export function checkAttentionSpec(op: string, spec: AttentionSpec): void {
  for (const name of ["batch", "heads", "kvHeads", "seqLen", "headDim", "valueDim"] as const) {
    checkCount(op, name, spec[name]);
  }
  checkCount(op, "window", spec.window);
  checkCount(op, "initialKeys", spec.initialKeys);
  if (spec.kvHeads === 0 || spec.heads % spec.kvHeads !== 0) {
    throw new Error(
      `${op}: kvHeads is ${spec.kvHeads} but must divide heads ${spec.heads}; ` +
        "choose a divisor of the query head count",
    );
  }
  if (!Number.isFinite(spec.scale)) {
    throw new Error(`${op}: scale is ${spec.scale} but must be a finite number`);
  }
  if (!["none", "keys", "full"].includes(spec.biasKind)) {
    throw new Error(`${op}: biasKind is ${spec.biasKind}; use "none", "keys" or "full"`);
  }
}

/**
 * Logits of the keys visible to one query row, in key order: `keys` and `logits` are filled and
 * their count returned.
 */
function rowLogits(
  views: Views,
  spec: AttentionSpec,
  b: number,
  h: number,
  i: number,
  keys: Int32Array,
  logits: Float64Array,
): number {
  const { heads, kvHeads, seqLen: t, headDim: dk } = spec;
  const kvh = Math.floor(h / (heads / kvHeads));
  const row = (b * heads + h) * t + i;
  const window = views.windows ? views.windows[h] : spec.window;

  let count = 0;
  for (let j = 0; j <= i; j++) {
    if (window > 0 && i - j >= window && j >= spec.initialKeys) continue;
    if (views.keyMask && views.keyMask[b * t + j] === 0) continue;
    if (views.keyEnds && i >= views.keyEnds[(b * kvHeads + kvh) * t + j]) continue;

    let s = 0;
    const kBase = ((b * kvHeads + kvh) * t + j) * dk;
    for (let d = 0; d < dk; d++) s += views.q[row * dk + d] * views.k[kBase + d];
    s *= spec.scale;
    if (spec.biasKind === "keys") s += views.bias![(b * kvHeads + kvh) * t + j];
    if (spec.biasKind === "full") s += views.bias![row * t + j];
    if (views.alibi) s -= views.alibi[h] * (i - j);
    keys[count] = j;
    logits[count] = s;
    count++;
  }
  return count;
}

/** Log-sum-exp of the first `count` logits and the optional sink; 0 when both are absent. */
function logSumExp(logits: Float64Array, count: number, sink: number | null): number {
  let max = sink ?? -Infinity;
  for (let c = 0; c < count; c++) max = Math.max(max, logits[c]);
  if (max === -Infinity) return 0;
  let sum = sink === null ? 0 : Math.exp(sink - max);
  for (let c = 0; c < count; c++) sum += Math.exp(logits[c] - max);
  return max + Math.log(sum);
}

export function attention(
  mem: CpuMemory,
  inputs: AttentionInputs,
  spec: AttentionSpec,
): { out: Storage; lse: Storage } {
  const views = readInputs(mem, "attention", inputs, spec, true);
  const { batch, heads, kvHeads, seqLen: t, valueDim: dv } = spec;
  const out = mem.allocFloat(batch * heads * t * dv);
  const lse = mem.allocFloat(batch * heads * t);
  const keys = new Int32Array(t);
  const logits = new Float64Array(t);
  const acc = new Float64Array(dv);

  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / (heads / kvHeads));
      for (let i = 0; i < t; i++) {
        const row = (b * heads + h) * t + i;
        const count = rowLogits(views, spec, b, h, i, keys, logits);
        const sink = views.sink ? views.sink[row] : null;
        const rowLse = count === 0 && sink === null ? 0 : logSumExp(logits, count, sink);

        acc.fill(0);
        for (let c = 0; c < count; c++) {
          const p = Math.exp(logits[c] - rowLse);
          const vBase = ((b * kvHeads + kvh) * t + keys[c]) * dv;
          for (let d = 0; d < dv; d++) acc[d] += p * views.v![vBase + d];
        }
        for (let d = 0; d < dv; d++) out.data[row * dv + d] = acc[d];
        lse.data[row] = rowLse;
      }
    }
  }
  return { out, lse };
}

export function attentionBackward(
  mem: CpuMemory,
  inputs: AttentionInputs,
  out: Storage,
  lse: Storage,
  dout: Storage,
  spec: AttentionSpec,
): AttentionGrads {
  const op = "attentionBackward";
  const views = readInputs(mem, op, inputs, spec, true);
  const { batch, heads, kvHeads, seqLen: t, headDim: dk, valueDim: dv } = spec;
  const o = mem.floats(op, "out", out, batch * heads * t * dv);
  const lses = mem.floats(op, "lse", lse, batch * heads * t);
  const dO = mem.floats(op, "dout", dout, batch * heads * t * dv);

  // Accumulate in float64 whatever the storage precision, then copy out.
  const dq = new Float64Array(batch * heads * t * dk);
  const dkAcc = new Float64Array(batch * kvHeads * t * dk);
  const dvAcc = new Float64Array(batch * kvHeads * t * dv);
  const dbias = views.bias ? new Float64Array(views.bias.length) : null;
  const dsink = views.sink ? new Float64Array(views.sink.length) : null;
  const keys = new Int32Array(t);
  const logits = new Float64Array(t);

  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / (heads / kvHeads));
      for (let i = 0; i < t; i++) {
        const row = (b * heads + h) * t + i;
        const count = rowLogits(views, spec, b, h, i, keys, logits);

        let rowDot = 0;
        for (let d = 0; d < dv; d++) rowDot += dO[row * dv + d] * o[row * dv + d];
        if (dsink) dsink[row] = -Math.exp(views.sink![row] - lses[row]) * rowDot;

        for (let c = 0; c < count; c++) {
          const j = keys[c];
          const kvRow = (b * kvHeads + kvh) * t + j;
          const p = Math.exp(logits[c] - lses[row]);
          let dp = 0;
          for (let d = 0; d < dv; d++) {
            dp += dO[row * dv + d] * views.v![kvRow * dv + d];
            dvAcc[kvRow * dv + d] += p * dO[row * dv + d];
          }
          const ds = p * (dp - rowDot);
          for (let d = 0; d < dk; d++) {
            dq[row * dk + d] += ds * spec.scale * views.k[kvRow * dk + d];
            dkAcc[kvRow * dk + d] += ds * spec.scale * views.q[row * dk + d];
          }
          if (spec.biasKind === "keys") dbias![kvRow] += ds;
          if (spec.biasKind === "full") dbias![row * t + j] += ds;
        }
      }
    }
  }

  const store = (values: Float64Array | null): Storage | null => {
    if (values === null) return null;
    const storage = mem.allocFloat(values.length);
    storage.data.set(values);
    return storage;
  };
  return {
    dq: store(dq)!,
    dk: store(dkAcc)!,
    dv: store(dvAcc)!,
    dbias: store(dbias),
    dsink: store(dsink),
  };
}

export function attentionProbs(
  mem: CpuMemory,
  inputs: AttentionInputs,
  spec: AttentionSpec,
): Storage {
  const views = readInputs(mem, "attentionProbs", inputs, spec, false);
  const { batch, heads, seqLen: t } = spec;
  const probs = mem.allocFloat(batch * heads * t * t);
  probs.data.fill(0);
  const keys = new Int32Array(t);
  const logits = new Float64Array(t);

  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < t; i++) {
        const row = (b * heads + h) * t + i;
        const count = rowLogits(views, spec, b, h, i, keys, logits);
        const sink = views.sink ? views.sink[row] : null;
        const rowLse = logSumExp(logits, count, sink);
        for (let c = 0; c < count; c++) {
          probs.data[row * t + keys[c]] = Math.exp(logits[c] - rowLse);
        }
      }
    }
  }
  return probs;
}

export function attentionKeepEnds(
  mem: CpuMemory,
  scores: Storage,
  rows: number,
  seqLen: number,
  keep: number,
): Storage {
  const op = "attentionKeepEnds";
  checkCount(op, "rows", rows);
  checkCount(op, "seqLen", seqLen);
  checkCount(op, "keep", keep);
  const s = mem.floats(op, "scores", scores, rows * seqLen);
  const ends = mem.allocInt(rows * seqLen);

  for (let r = 0; r < rows; r++) {
    const base = r * seqLen;
    for (let j = 0; j < seqLen; j++) {
      // Keys ranked above j among 0..i: earlier ones only when strictly higher, later ones on ties.
      let above = 0;
      for (let a = 0; a < j; a++) if (s[base + a] > s[base + j]) above++;
      let end = above >= keep ? j : seqLen;
      for (let i = j + 1; i < seqLen && end === seqLen; i++) {
        if (s[base + i] >= s[base + j]) above++;
        if (above >= keep) end = i;
      }
      ends.data[base + j] = end;
    }
  }
  return ends;
}
