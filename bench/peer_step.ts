/**
 * The tiny-GPT training step of bench/moelab.ts written for jax-js 0.1.25 (WebGPU and WebAssembly)
 * and TensorFlow.js 4.22 (WebGPU), so `deno task bench` can time the step against moelab's in the
 * same process. Both libraries are imported dynamically through bench/peers.ts.
 *
 * The model matches moelab's `tinyGpt`: 2 pre-norm blocks, dModel 128, 4 heads, T 128, batch 8,
 * vocabulary 256, RMSNorm (eps 1e-5), rotary positions pairing (i, i + headDim/2), causal softmax
 * attention, a GELU (tanh) MLP of width 512, tied embeddings and no biases. The update is AdamW
 * (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1) after global gradient clipping at norm 1.
 * Neither peer has RMSNorm or rotary positions, so both are built from their primitives. The
 * embedding lookup and the cross-entropy use one-hot products, whose gradients both peers support.
 * The causal mask adds −1e9 to the logits above the diagonal.
 */

import { TINY_GPT } from "./moelab.ts";
import { loadJax, loadTf, type PeerResult, reason } from "./peers.ts";
import { time, type TimingOptions } from "./timing.ts";

// deno-lint-ignore no-explicit-any
type Module = any;

const EPS_NORM = 1e-5;
const BETA1 = 0.9;
const BETA2 = 0.95;
const EPS_ADAM = 1e-8;
const WEIGHT_DECAY = 0.1;
const MAX_GRAD_NORM = 1;
const MASK_VALUE = -1e9;

/** Parameter names and shapes, weights stored [in, out] so a layer is x·W. */
function parameterShapes(): [string, number[]][] {
  const { numLayers, dModel, vocabSize } = TINY_GPT;
  const shapes: [string, number[]][] = [["embed", [vocabSize, dModel]], ["finalNorm", [dModel]]];
  for (let l = 0; l < numLayers; l++) {
    shapes.push(
      [`l${l}.norm1`, [dModel]],
      [`l${l}.norm2`, [dModel]],
      [`l${l}.wq`, [dModel, dModel]],
      [`l${l}.wk`, [dModel, dModel]],
      [`l${l}.wv`, [dModel, dModel]],
      [`l${l}.wo`, [dModel, dModel]],
      [`l${l}.up`, [dModel, 4 * dModel]],
      [`l${l}.down`, [4 * dModel, dModel]],
    );
  }
  return shapes;
}

/** Initial values: norm gains 1, weights normal with std 0.02 (Box–Muller). */
function initialValues(name: string, shape: number[]): Float32Array {
  const size = shape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(size);
  if (name.includes("norm") || name === "finalNorm") return data.fill(1);
  for (let i = 0; i < size; i++) {
    const u = 1 - Math.random();
    data[i] = 0.02 * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
  }
  return data;
}

/** Rotary cos and sin tables [T, headDim/2] and the additive causal mask [T, T]. */
function constants(): { cos: Float32Array; sin: Float32Array; mask: Float32Array } {
  const { seqLen, dModel, numHeads } = TINY_GPT;
  const half = dModel / numHeads / 2;
  const cos = new Float32Array(seqLen * half);
  const sin = new Float32Array(seqLen * half);
  for (let t = 0; t < seqLen; t++) {
    for (let i = 0; i < half; i++) {
      const theta = t * Math.pow(10000, (-2 * i) / (2 * half));
      cos[t * half + i] = Math.cos(theta);
      sin[t * half + i] = Math.sin(theta);
    }
  }
  const mask = new Float32Array(seqLen * seqLen);
  for (let q = 0; q < seqLen; q++) {
    for (let k = q + 1; k < seqLen; k++) mask[q * seqLen + k] = MASK_VALUE;
  }
  return { cos, sin, mask };
}

function randomTokens(): Int32Array {
  const { batchSize, seqLen, vocabSize } = TINY_GPT;
  return Int32Array.from(
    { length: batchSize * seqLen },
    () => Math.floor(Math.random() * vocabSize),
  );
}

// --- jax-js -------------------------------------------------------------------------------------

/**
 * Builds the jax-js loss of the tiny GPT. Every jax-js function takes ownership of its array
 * arguments, so an array used again later is passed as `.ref`.
 */
function jaxLoss(jax: Module) {
  const np = jax.numpy;
  const nn = jax.nn;
  const { numLayers, dModel, numHeads, seqLen, batchSize, vocabSize } = TINY_GPT;
  const headDim = dModel / numHeads;

  function rmsNorm(x: Module, gain: Module): Module {
    const meanSquare = np.square(x.ref).mean(-1, { keepdims: true });
    return x.mul(np.reciprocal(np.sqrt(meanSquare.add(EPS_NORM)))).mul(gain);
  }

  // x: [B, H, T, headDim]; cos, sin: [T, headDim/2]
  function rope(x: Module, cos: Module, sin: Module): Module {
    const [x1, x2] = np.split(x, 2, -1);
    const first = x1.ref.mul(cos.ref).sub(x2.ref.mul(sin.ref));
    const second = x1.mul(sin).add(x2.mul(cos));
    return np.concatenate([first, second], -1);
  }

  function heads(x: Module): Module {
    return x.reshape([batchSize, seqLen, numHeads, headDim]).transpose([0, 2, 1, 3]);
  }

  return function loss(
    params: Record<string, Module>,
    ids: Module,
    targets: Module,
    consts: { cos: Module; sin: Module; mask: Module },
  ): Module {
    const rows = batchSize * seqLen;
    let x = np.matmul(
      nn.oneHot(ids.reshape([rows]), vocabSize).astype(np.float32),
      params.embed.ref,
    );
    for (let l = 0; l < numLayers; l++) {
      const p = (name: string) => params[`l${l}.${name}`];
      const h = rmsNorm(x.ref, p("norm1"));
      const q = rope(heads(np.matmul(h.ref, p("wq"))), consts.cos.ref, consts.sin.ref);
      const k = rope(heads(np.matmul(h.ref, p("wk"))), consts.cos.ref, consts.sin.ref);
      const v = heads(np.matmul(h, p("wv")));
      const scores = np.matmul(q.mul(1 / Math.sqrt(headDim)), k.transpose([0, 1, 3, 2]))
        .add(consts.mask.ref);
      const context = np.matmul(nn.softmax(scores, -1), v).transpose([0, 2, 1, 3])
        .reshape([rows, dModel]);
      x = x.add(np.matmul(context, p("wo")));
      const up = np.matmul(rmsNorm(x.ref, p("norm2")), p("up"));
      x = x.add(np.matmul(nn.gelu(up, { approximate: true }), p("down")));
    }
    consts.cos.dispose();
    consts.sin.dispose();
    consts.mask.dispose();
    const logits = np.matmul(rmsNorm(x, params.finalNorm), params.embed.transpose());
    const picked = nn.logSoftmax(logits, -1).mul(
      nn.oneHot(targets.reshape([rows]), vocabSize).astype(np.float32),
    );
    return picked.sum().mul(-1 / rows);
  };
}

/**
 * Builds the jax-js step: loss and gradients, global clipping at 1 and AdamW, returning the new
 * parameters and moments. `biasCorrection` contains [1 − β1^t, 1 − β2^t] so one compiled step serves
 * every t.
 */
function jaxStep(jax: Module) {
  const np = jax.numpy;
  const valueAndGrad = jax.valueAndGrad(jaxLoss(jax));
  const lr = TINY_GPT.lr;

  return function step(
    params: Record<string, Module>,
    m: Record<string, Module>,
    v: Record<string, Module>,
    biasCorrection: Module,
    ids: Module,
    targets: Module,
    consts: { cos: Module; sin: Module; mask: Module },
  ) {
    const names = Object.keys(params);
    const shared: Record<string, Module> = {};
    for (const name of names) shared[name] = params[name].ref;
    const [loss, grads] = valueAndGrad(shared, ids, targets, consts);

    let normSq = np.square(grads[names[0]].ref).sum();
    for (const name of names.slice(1)) normSq = normSq.add(np.square(grads[name].ref).sum());
    const norm = np.sqrt(normSq);
    const coefficient = np.minimum(np.reciprocal(norm.add(1e-6)).mul(MAX_GRAD_NORM), 1);
    const [correction1, correction2] = np.split(biasCorrection, 2);

    const next: Record<string, Module> = {};
    const nextM: Record<string, Module> = {};
    const nextV: Record<string, Module> = {};
    for (const name of names) {
      const g = grads[name].mul(coefficient.ref);
      nextM[name] = m[name].mul(BETA1).add(g.ref.mul(1 - BETA1));
      nextV[name] = v[name].mul(BETA2).add(np.square(g).mul(1 - BETA2));
      const mHat = nextM[name].ref.div(correction1.ref);
      const vHat = nextV[name].ref.div(correction2.ref);
      const update = mHat.div(np.sqrt(vHat).add(EPS_ADAM));
      next[name] = params[name].mul(1 - lr * WEIGHT_DECAY).sub(update.mul(lr));
    }
    coefficient.dispose();
    correction1.dispose();
    correction2.dispose();
    return { params: next, m: nextM, v: nextV, loss };
  };
}

/** One training step that resolves after its loss is read back, and the release of its arrays. */
export interface PeerStep {
  run: () => Promise<void>;
  dispose: () => void;
}

/**
 * Builds the tiny-GPT step on a jax-js device, compiled with `jit` (loss, gradients, clipping and
 * AdamW in one traced function). Returns the reason as a string when the device is missing.
 */
export async function createJaxStep(device: "wasm" | "webgpu"): Promise<PeerStep | string> {
  const { jax, devices } = await loadJax();
  if (!devices.includes(device)) return `jax-js has no ${device} device here`;
  const np = jax.numpy;
  const put = (data: Float32Array | Int32Array, shape: number[]) =>
    np.array(data, { shape, device, dtype: data instanceof Int32Array ? np.int32 : np.float32 });

  let params: Record<string, Module> = {};
  let m: Record<string, Module> = {};
  let v: Record<string, Module> = {};
  for (const [name, shape] of parameterShapes()) {
    params[name] = put(initialValues(name, shape), shape);
    m[name] = np.zeros(shape, { device });
    v[name] = np.zeros(shape, { device });
  }
  const { cos, sin, mask } = constants();
  const half = TINY_GPT.dModel / TINY_GPT.numHeads / 2;
  const consts = {
    cos: put(cos, [TINY_GPT.seqLen, half]),
    sin: put(sin, [TINY_GPT.seqLen, half]),
    mask: put(mask, [TINY_GPT.seqLen, TINY_GPT.seqLen]),
  };
  const step = jax.jit(jaxStep(jax), { device });
  const shape = [TINY_GPT.batchSize, TINY_GPT.seqLen];
  let t = 0;

  async function run(): Promise<void> {
    t++;
    const biasCorrection = put(Float32Array.of(1 - BETA1 ** t, 1 - BETA2 ** t), [2]);
    const out = step(
      params,
      m,
      v,
      biasCorrection,
      put(randomTokens(), shape),
      put(randomTokens(), shape),
      { cos: consts.cos.ref, sin: consts.sin.ref, mask: consts.mask.ref },
    );
    params = out.params;
    m = out.m;
    v = out.v;
    const loss = await out.loss.data();
    if (!Number.isFinite(loss[0])) throw new Error(`loss is ${loss[0]} at step ${t}`);
  }

  function dispose(): void {
    for (const tree of [params, m, v]) for (const array of Object.values(tree)) array.dispose();
    for (const array of Object.values(consts)) array.dispose();
    step.dispose();
  }
  return { run, dispose };
}

/** Times the tiny-GPT step on a jax-js device, waiting for the loss each step. */
export async function jaxTrainStep(
  device: "wasm" | "webgpu",
  options: TimingOptions,
): Promise<PeerResult> {
  try {
    const step = await createJaxStep(device);
    if (typeof step === "string") return { absent: step };
    const timing = await time(step.run, options);
    step.dispose();
    return { timing };
  } catch (error) {
    return { absent: `jax-js ${device} step failed: ${reason(error)}` };
  }
}

// --- TensorFlow.js ------------------------------------------------------------------------------

function tfLoss(tf: Module, consts: Record<string, Module>) {
  const { numLayers, dModel, numHeads, seqLen, batchSize, vocabSize } = TINY_GPT;
  const headDim = dModel / numHeads;
  const rows = batchSize * seqLen;

  const rmsNorm = (x: Module, gain: Module) =>
    x.mul(tf.rsqrt(x.square().mean(-1, true).add(EPS_NORM))).mul(gain);
  const heads = (x: Module) =>
    x.reshape([batchSize, seqLen, numHeads, headDim]).transpose([0, 2, 1, 3]);
  const rope = (x: Module) => {
    const [x1, x2] = tf.split(x, 2, -1);
    return tf.concat([
      x1.mul(consts.cos).sub(x2.mul(consts.sin)),
      x1.mul(consts.sin).add(x2.mul(consts.cos)),
    ], -1);
  };
  // GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). tfjs-core 4.22 has no
  // GELU op.
  const gelu = (x: Module) =>
    x.mul(0.5).mul(tf.tanh(x.add(x.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI))).add(1));

  return (variables: Record<string, Module>, ids: Module, targets: Module) => {
    let x = tf.matMul(tf.oneHot(ids.reshape([rows]), vocabSize), variables.embed);
    for (let l = 0; l < numLayers; l++) {
      const p = (name: string) => variables[`l${l}.${name}`];
      const h = rmsNorm(x, p("norm1"));
      const q = rope(heads(tf.matMul(h, p("wq"))));
      const k = rope(heads(tf.matMul(h, p("wk"))));
      const v = heads(tf.matMul(h, p("wv")));
      const scores = tf.matMul(q.mul(1 / Math.sqrt(headDim)), k, false, true).add(consts.mask);
      const context = tf.matMul(tf.softmax(scores), v).transpose([0, 2, 1, 3])
        .reshape([rows, dModel]);
      x = x.add(tf.matMul(context, p("wo")));
      x = x.add(tf.matMul(gelu(tf.matMul(rmsNorm(x, p("norm2")), p("up"))), p("down")));
    }
    // NOTE: matMul(…, embed, false, true) here made the WebGPU backend (tfjs 4.22 on Deno 2.9 and
    // llvmpipe) return a loss near 4·10⁴ from the second step, where the CPU backend gave 5.57.
    // An explicit transpose gives 5.57 on both.
    const logits = tf.matMul(rmsNorm(x, variables.finalNorm), variables.embed.transpose());
    const picked = tf.logSoftmax(logits).mul(tf.oneHot(targets.reshape([rows]), vocabSize));
    return picked.sum().mul(-1 / rows);
  };
}

/**
 * Builds the tiny-GPT step on TensorFlow.js's WebGPU backend: `tf.valueAndGrads` over the
 * parameters, then clipping and AdamW inside one `tf.tidy`. The parameters and moments are plain
 * tensors replaced each step.
 */
export async function createTfStep(): Promise<PeerStep> {
  const tf = await loadTf();
  const names = parameterShapes().map(([name]) => name);
  let params: Module[] = [];
  let m: Module[] = [];
  let v: Module[] = [];
  for (const [name, shape] of parameterShapes()) {
    params.push(tf.tensor(initialValues(name, shape), shape));
    m.push(tf.zeros(shape));
    v.push(tf.zeros(shape));
  }
  const { cos, sin, mask } = constants();
  const half = TINY_GPT.dModel / TINY_GPT.numHeads / 2;
  const consts = {
    cos: tf.tensor(cos, [TINY_GPT.seqLen, half]),
    sin: tf.tensor(sin, [TINY_GPT.seqLen, half]),
    mask: tf.tensor(mask, [TINY_GPT.seqLen, TINY_GPT.seqLen]),
  };
  const loss = tfLoss(tf, consts);
  const shape = [TINY_GPT.batchSize, TINY_GPT.seqLen];
  const lr = TINY_GPT.lr;
  let t = 0;

  async function run(): Promise<void> {
    t++;
    const ids = tf.tensor(randomTokens(), shape, "int32");
    const targets = tf.tensor(randomTokens(), shape, "int32");
    const out = tf.tidy(() => {
      const lossOf = (...tensors: Module[]) =>
        loss(Object.fromEntries(names.map((name, i) => [name, tensors[i]])), ids, targets);
      const { value, grads } = tf.valueAndGrads(lossOf)(params);
      const norm = tf.sqrt(tf.addN(grads.map((g: Module) => g.square().sum())));
      const coefficient = tf.minimum(tf.scalar(MAX_GRAD_NORM).div(norm.add(1e-6)), 1);
      const next: Module[] = [];
      const nextM: Module[] = [];
      const nextV: Module[] = [];
      grads.forEach((grad: Module, i: number) => {
        const g = grad.mul(coefficient);
        nextM.push(m[i].mul(BETA1).add(g.mul(1 - BETA1)));
        nextV.push(v[i].mul(BETA2).add(g.square().mul(1 - BETA2)));
        const update = nextM[i].div(1 - BETA1 ** t)
          .div(nextV[i].div(1 - BETA2 ** t).sqrt().add(EPS_ADAM));
        next.push(params[i].mul(1 - lr * WEIGHT_DECAY).sub(update.mul(lr)));
      });
      return { value, next, nextM, nextV };
    });
    ids.dispose();
    targets.dispose();
    for (const tensor of [...params, ...m, ...v]) tensor.dispose();
    params = out.next;
    m = out.nextM;
    v = out.nextV;
    const data = await out.value.data();
    out.value.dispose();
    if (!Number.isFinite(data[0])) throw new Error(`loss is ${data[0]} at step ${t}`);
  }

  function dispose(): void {
    for (const tensor of [...params, ...m, ...v]) tensor.dispose();
    for (const tensor of Object.values(consts)) tensor.dispose();
  }
  return { run, dispose };
}

/** Times the tiny-GPT step on TensorFlow.js's WebGPU backend, waiting for the loss each step. */
export async function tfTrainStep(options: TimingOptions): Promise<PeerResult> {
  try {
    const step = await createTfStep();
    const timing = await time(step.run, options);
    step.dispose();
    return { timing };
  } catch (error) {
    return { absent: `TensorFlow.js webgpu step failed: ${reason(error)}` };
  }
}
