/**
 * Routing diagnostics of an MoE layer: expert load, MaxVio, coefficient of variation, dead
 * experts, drop rate, router entropy and the routing-fluctuation rate between two recordings.
 * The metrics are pure functions of host arrays; `routingMetrics` reads one layer's
 * `RoutingRecord` back from the device and returns them as one flat row of named numbers.
 */

import type { RoutingRecord } from "./moe_layer.ts";

/** Assignments per expert; ids outside [0, numExperts) (empty or dropped slots) are skipped. */
export function expertLoad(experts: ArrayLike<number>, numExperts: number): Float64Array {
  const load = new Float64Array(numExperts);
  for (let i = 0; i < experts.length; i++) {
    const e = experts[i];
    if (e >= 0 && e < numExperts) load[e]++;
  }
  return load;
}

function meanOf(values: ArrayLike<number>): number {
  let total = 0;
  for (let i = 0; i < values.length; i++) total += values[i];
  return values.length === 0 ? 0 : total / values.length;
}

/** (max load − mean load) / mean load, as in Loss-Free Balancing; 0 when nothing is routed. */
export function maxViolation(load: ArrayLike<number>): number {
  const average = meanOf(load);
  if (average === 0) return 0;
  return (Math.max(...Array.from(load)) - average) / average;
}

/** Population standard deviation of the load over its mean; 0 when nothing is routed. */
export function coefficientOfVariation(load: ArrayLike<number>): number {
  const average = meanOf(load);
  if (average === 0) return 0;
  let squares = 0;
  for (let i = 0; i < load.length; i++) squares += (load[i] - average) ** 2;
  return Math.sqrt(squares / load.length) / average;
}

/** Experts that received no assignment. */
export function deadExperts(load: ArrayLike<number>): number {
  let dead = 0;
  for (let i = 0; i < load.length; i++) if (load[i] === 0) dead++;
  return dead;
}

/** Fraction of the routed (non-empty) assignments that capacity dropped. */
export function dropRate(routed: ArrayLike<number>, kept: ArrayLike<number>): number {
  let assigned = 0;
  let dropped = 0;
  for (let i = 0; i < routed.length; i++) {
    if (routed[i] < 0) continue;
    assigned++;
    if (kept[i] < 0) dropped++;
  }
  return assigned === 0 ? 0 : dropped / assigned;
}

/** Mean over tokens of −Σ_e p log p (nats) for probs [n, numExperts]; 0 log 0 counts as 0. */
export function meanEntropy(probs: ArrayLike<number>, numExperts: number): number {
  const n = probs.length / numExperts;
  if (n === 0) return 0;
  let total = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i];
    if (p > 0) total -= p * Math.log(p);
  }
  return total / n;
}

/**
 * Groups the experts by token, in assignment order (for token choice, top-K rank order), and skips
 * empty and dropped slots.
 */
export function tokenExpertSets(
  tokens: ArrayLike<number>,
  experts: ArrayLike<number>,
  numTokens: number,
): number[][] {
  const sets: number[][] = Array.from({ length: numTokens }, () => []);
  for (let i = 0; i < tokens.length; i++) {
    if (experts[i] >= 0 && tokens[i] >= 0) sets[tokens[i]].push(experts[i]);
  }
  return sets;
}

/**
 * Routing-fluctuation rate between two recordings of the same tokens: the fraction of tokens
 * whose selected expert set changed (`topKSet`) and whose first-ranked expert changed (`top1`).
 * Identical routings give 0; routings where every token's experts changed give 1.
 */
export function routingFluctuation(
  before: readonly number[][],
  after: readonly number[][],
): { topKSet: number; top1: number } {
  if (before.length !== after.length) {
    throw new Error(
      `routingFluctuation: recordings cover ${before.length} and ${after.length} tokens; ` +
        `record the same probe tokens both times`,
    );
  }
  if (before.length === 0) return { topKSet: 0, top1: 0 };
  let setChanges = 0;
  let topChanges = 0;
  for (let t = 0; t < before.length; t++) {
    const a = [...before[t]].sort((x, y) => x - y);
    const b = [...after[t]].sort((x, y) => x - y);
    if (a.length !== b.length || a.some((e, i) => e !== b[i])) setChanges++;
    if (before[t][0] !== after[t][0]) topChanges++;
  }
  return { topKSet: setChanges / before.length, top1: topChanges / before.length };
}

/**
 * Reads one layer's routing record and returns its metrics as a flat row: `max_vio`, `cv`,
 * `dead_experts`, `drop_rate`, `router_entropy` (NaN for routers without probabilities),
 * `aux_<name>` for each weighted auxiliary loss, and `load_<e>` (the fraction of kept
 * assignments that expert e received).
 */
export async function routingMetrics(record: RoutingRecord): Promise<Record<string, number>> {
  const routed = await record.routedExperts.data();
  const kept = await record.keptExperts.data();
  const load = expertLoad(kept, record.numExperts);
  const row: Record<string, number> = {
    max_vio: maxViolation(load),
    cv: coefficientOfVariation(load),
    dead_experts: deadExperts(load),
    drop_rate: dropRate(routed, kept),
    router_entropy: record.probs === null
      ? NaN
      : meanEntropy(await record.probs.data(), record.numExperts),
  };
  for (const [name, loss] of Object.entries(record.auxLosses)) {
    row[`aux_${name}`] = await loss.item();
  }
  const total = load.reduce((a, b) => a + b, 0);
  load.forEach((value, e) => {
    row[`load_${e}`] = total === 0 ? 0 : value / total;
  });
  return row;
}

/** Reads one layer's per-token expert sets (for `routingFluctuation` across checkpoints). */
export async function recordedExpertSets(record: RoutingRecord): Promise<number[][]> {
  const tokens = await record.tokens.data();
  const kept = await record.keptExperts.data();
  return tokenExpertSets(tokens, kept, record.numTokens);
}
