/**
 * A counter-based random number generator.
 *
 * Each draw is a pure function of (seed, stream, counter), so the same seed gives the same numbers
 * on every backend and after a resume: the state is two integers that a checkpoint can store.
 * The mixing function is the SplitMix64 finaliser applied to a 64-bit key built from the inputs,
 * computed in BigInt-free 32-bit halves.
 */

/** Mixes two 32-bit words into one well-distributed 32-bit word (a MurmurHash3-style finaliser). */
function mix32(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The serialisable state of an `Rng`: enough to continue the exact stream. */
export interface RngState {
  seed: number;
  counter: number;
}

export class Rng {
  #key: number;
  seed: number;
  counter: number;

  constructor(seed: number, counter = 0) {
    if (!Number.isInteger(seed)) throw new Error(`rng seed must be an integer, got ${seed}`);
    this.seed = seed;
    this.counter = counter;
    this.#key = mix32(seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0);
  }

  /** Derives an independent generator for a named purpose ("init", "data", ...). */
  fork(name: string): Rng {
    let h = this.#key;
    for (let i = 0; i < name.length; i++) h = mix32(h, name.charCodeAt(i));
    return new Rng(h, 0);
  }

  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const c = this.counter++;
    return mix32(mix32(this.#key, c >>> 0), Math.floor(c / 2 ** 32) >>> 0);
  }

  /** A uniform float in [0, 1) with 32 bits of resolution. */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** A standard normal sample (Box–Muller on two uniforms; one value per call). */
  normal(): number {
    const u1 = (this.nextUint32() + 1) / 4294967297; // in (0, 1], so log is finite
    const u2 = this.uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Fills a new array with normal samples of standard deviation `std`. */
  normalArray(size: number, std = 1): Float64Array {
    const out = new Float64Array(size);
    for (let i = 0; i < size; i++) out[i] = this.normal() * std;
    return out;
  }

  /** Fills a new array with uniform samples in [low, high). */
  uniformArray(size: number, low = 0, high = 1): Float64Array {
    const out = new Float64Array(size);
    for (let i = 0; i < size; i++) out[i] = low + (high - low) * this.uniform();
    return out;
  }

  state(): RngState {
    return { seed: this.seed, counter: this.counter };
  }

  static fromState(state: RngState): Rng {
    return new Rng(state.seed, state.counter);
  }
}
