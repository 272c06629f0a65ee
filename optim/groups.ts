/**
 * Parameter groups: which parameters each algorithm updates, with which lr and weight decay.
 *
 * Explicit rules match parameters by dotted-name glob and by rank; a parameter may match at most
 * one explicit rule. Parameters no explicit rule matches fall to the default rules:
 * - hidden matrices (rank ≥ 2, not embeddings, not the output head, not router or gate weights)
 *   go to Muon when the optimizer is "muon", else to the optimizer's algorithm with weight decay;
 * - the output head and router or gate weights go to AdamW (or SGD) with weight decay;
 * - embeddings and tensors of rank < 2 (norm gains, biases, scalars) go to AdamW (or SGD) without
 *   weight decay.
 * Which small router and gate matrices Muon should take is not settled in the Muon literature, so
 * they default to AdamW.
 */

import { formatShape, type Tensor } from "../tensor/mod.ts";
import { defaultDecay } from "./adamw.ts";
import type { Algorithm, GroupInfo } from "./optimizer.ts";

/** An explicit group rule. Every condition given must hold for a parameter to match. */
export interface GroupRule {
  /** The group's name in logs (default `rule<index>`). */
  name?: string;
  /** Dotted-name glob: `*` matches within one segment, `**` zero or more segments (default `**`). */
  params?: string;
  /** Exact rank. */
  rank?: number;
  minRank?: number;
  maxRank?: number;
  algorithm: Algorithm;
  /** Overrides the algorithm's base lr. */
  lr?: number;
  /** Overrides the algorithm's weight decay. */
  weightDecay?: number;
}

/** The class of a parameter under the default rules. */
export type ParamRole = "hidden" | "embedding" | "head" | "router" | "vector";

/** A group before its algorithm's options are filled in. */
export interface AssignedGroup {
  name: string;
  algorithm: Algorithm;
  /** Overrides of the algorithm's base options; the default no-decay groups set weightDecay 0. */
  lr?: number;
  weightDecay?: number;
  params: Map<string, Tensor>;
}

// The SwiGLU gate projection of an MLP or expert is a hidden matrix, not a routing gate.
const MLP_PARENT = /^(mlp|ffn|experts?|sharedExperts?)$/i;

/**
 * Classifies a parameter by name and rank for the default rules. Router weights are those with a
 * segment containing "router" or "gate", except a `gate` projection directly under an MLP or
 * expert module (`blocks.0.mlp.gate.weight`).
 */
export function paramRole(name: string, param: Tensor): ParamRole {
  if (param.rank < 2) return "vector";
  if (!defaultDecay(name, param)) return "embedding";

  const segments = name.split(".");
  if (segments[0] === "head" || segments[0] === "lmHead") return "head";
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i];
    if (/router/i.test(segment)) return "router";
    if (
      /gate/i.test(segment) && !(segment === "gate" && i > 0 && MLP_PARENT.test(segments[i - 1]))
    ) {
      return "router";
    }
  }
  return "hidden";
}

/** Tests a dotted name against a glob: `*` stays within a segment, `**` spans segments. */
export function matchGlob(pattern: string, name: string): boolean {
  return matchSegments(pattern.split("."), 0, name.split("."), 0);
}

function matchSegments(pattern: string[], p: number, name: string[], n: number): boolean {
  if (p === pattern.length) return n === name.length;
  if (pattern[p] === "**") {
    for (let skip = n; skip <= name.length; skip++) {
      if (matchSegments(pattern, p + 1, name, skip)) return true;
    }
    return false;
  }
  if (n === name.length) return false;
  return segmentRegex(pattern[p]).test(name[n]) && matchSegments(pattern, p + 1, name, n + 1);
}

function segmentRegex(segment: string): RegExp {
  const escaped = segment.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${escaped.join("[^.]*")}$`);
}

function ruleName(rule: GroupRule, index: number): string {
  return rule.name ?? `rule${index}`;
}

function describeRule(rule: GroupRule, index: number): string {
  const conditions = [`params "${rule.params ?? "**"}"`];
  if (rule.rank !== undefined) conditions.push(`rank ${rule.rank}`);
  if (rule.minRank !== undefined) conditions.push(`minRank ${rule.minRank}`);
  if (rule.maxRank !== undefined) conditions.push(`maxRank ${rule.maxRank}`);
  return `rule "${ruleName(rule, index)}" (${conditions.join(", ")})`;
}

function ruleMatches(rule: GroupRule, name: string, param: Tensor): boolean {
  if (rule.rank !== undefined && param.rank !== rule.rank) return false;
  if (rule.minRank !== undefined && param.rank < rule.minRank) return false;
  if (rule.maxRank !== undefined && param.rank > rule.maxRank) return false;
  return matchGlob(rule.params ?? "**", name);
}

/**
 * Assigns every parameter to a group: explicit `rules` first, then the default rules for
 * `algorithm` (see the module comment). Groups left empty are dropped.
 *
 * Returns the groups and one warning per explicit rule that matches no parameter. Throws when a
 * parameter matches two explicit rules (naming both and the parameter) or a rule sends a tensor
 * of rank < 2 to Muon.
 */
export function assignGroups(
  params: Map<string, Tensor>,
  rules: readonly GroupRule[],
  algorithm: Algorithm,
): { groups: AssignedGroup[]; warnings: string[] } {
  const explicit: AssignedGroup[] = rules.map((rule, i) => ({
    name: ruleName(rule, i),
    algorithm: rule.algorithm,
    lr: rule.lr,
    weightDecay: rule.weightDecay,
    params: new Map(),
  }));
  const names = new Set<string>();
  for (const group of explicit) {
    if (names.has(group.name)) {
      throw new Error(`optimizer groups: two rules are named "${group.name}"; rename one`);
    }
    names.add(group.name);
  }

  const fallback = algorithm === "sgd" ? "sgd" : "adamw";
  const defaults = {
    hidden: { name: algorithm, algorithm, params: new Map() } as AssignedGroup,
    decay: { name: fallback, algorithm: fallback, params: new Map() } as AssignedGroup,
    noDecay: {
      name: `${fallback}NoDecay`,
      algorithm: fallback,
      weightDecay: 0,
      params: new Map(),
    } as AssignedGroup,
  };
  for (const group of Object.values(defaults)) {
    if (names.has(group.name)) {
      throw new Error(
        `optimizer groups: rule name "${group.name}" is taken by a default group; rename the rule`,
      );
    }
  }

  for (const [name, param] of params) {
    let matched = -1;
    rules.forEach((rule, i) => {
      if (!ruleMatches(rule, name, param)) return;
      if (matched >= 0) {
        throw new Error(
          `optimizer groups: parameter ${name} matches ${
            describeRule(rules[matched], matched)
          } and ` +
            `${describeRule(rule, i)}; narrow one so each parameter matches one rule`,
        );
      }
      matched = i;
    });

    if (matched >= 0) {
      if (rules[matched].algorithm === "muon" && param.rank < 2) {
        throw new Error(
          `optimizer groups: ${describeRule(rules[matched], matched)} sends ${name} ` +
            `${
              formatShape(param.shape)
            } to Muon, which needs rank ≥ 2; add a rank condition or route it to AdamW`,
        );
      }
      explicit[matched].params.set(name, param);
      continue;
    }

    // With AdamW or SGD as the main algorithm, hidden matrices share the decayed group.
    const role = paramRole(name, param);
    if (role === "hidden") defaults.hidden.params.set(name, param);
    else if (role === "head" || role === "router") {
      (algorithm === "muon" ? defaults.decay : defaults.hidden).params.set(name, param);
    } else defaults.noDecay.params.set(name, param);
  }

  const warnings = explicit
    .map((group, i) =>
      group.params.size === 0
        ? `optimizer groups: ${describeRule(rules[i], i)} matches no parameter`
        : ""
    )
    .filter((w) => w !== "");

  const groups = [...explicit, defaults.hidden, defaults.decay, defaults.noDecay].filter((g) =>
    g.params.size > 0
  );
  return { groups, warnings };
}

/**
 * Describes an optimizer's groups for the run log: one line per group with its algorithm, lr,
 * weight decay and size, then one indented line per parameter with its shape.
 */
export function describeGroups(
  groups: readonly GroupInfo[],
  params: ReadonlyMap<string, Tensor>,
): string[] {
  const lines: string[] = [];
  for (const group of groups) {
    const { algorithm, lr, weightDecay } = group.options;
    const values = group.paramNames.reduce(
      (total, name) => total + (params.get(name)?.size ?? 0),
      0,
    );
    lines.push(
      `group ${group.name}: ${algorithm} lr ${lr} weightDecay ${weightDecay}, ` +
        `${group.paramNames.length} tensors, ${values} values`,
    );
    for (const name of group.paramNames) {
      const shape = params.get(name)?.shape;
      lines.push(
        `  ${name} ${
          shape === undefined ? "(unknown shape)" : formatShape(shape)
        } -> ${group.name}`,
      );
    }
  }
  return lines;
}
