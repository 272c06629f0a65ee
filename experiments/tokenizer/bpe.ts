/**
 * A byte-level byte-pair-encoding tokenizer (Sennrich et al., "Neural Machine Translation of Rare
 * Words with Subword Units", 2016, applied to bytes as in GPT-2).
 *
 * Ids 0–255 are the bytes themselves, so any UTF-8 text can be encoded (the byte fallback). Each
 * merge learned in training adds one id from 256 upward for the concatenation of two existing
 * tokens. Text is first split into pre-tokens with GPT-2's pattern (contractions, runs of letters,
 * of digits, of other symbols, each with at most one leading space, and runs of whitespace), and no
 * merge crosses a pre-token boundary.
 *
 * Example:
 * ```ts
 * const tokenizer = BpeTokenizer.train([trainBytes], 512);
 * const ids = tokenizer.encode(new TextEncoder().encode("Call me Ishmael."));
 * const saved = JSON.stringify(tokenizer.toJSON()); // BpeTokenizer.fromJSON(JSON.parse(saved))
 * ```
 */

import { UserError } from "../errors.ts";

/** The serialised form of a `BpeTokenizer`, as saved with a run. */
export interface BpeTokenizerJson {
  type: "bpe";
  version: 1;
  vocabSize: number;
  /** Merge i creates id 256 + i from the pair [left, right]. */
  merges: [number, number][];
}

/** The byte tokens; merged tokens come after them. */
export const BYTE_VOCAB_SIZE = 256;
/** The largest vocabulary: pair keys pack two ids into left * 2¹⁶ + right. */
export const MAX_VOCAB_SIZE = 65536;

const PRE_TOKEN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export class BpeTokenizer {
  readonly merges: readonly [number, number][];
  /** Rank (merge index) of each mergeable pair, keyed by `pairKey`. */
  readonly #ranks = new Map<number, number>();
  /** The bytes of every token id. */
  readonly #tokenBytes: Uint8Array[] = [];
  /** Encoded pre-tokens, reused because a corpus repeats few distinct words. */
  readonly #cache = new Map<string, number[]>();

  private constructor(merges: [number, number][]) {
    this.merges = merges;
    for (let byte = 0; byte < BYTE_VOCAB_SIZE; byte++) this.#tokenBytes.push(Uint8Array.of(byte));
    merges.forEach(([left, right], rank) => {
      const id = BYTE_VOCAB_SIZE + rank;
      if (!(left < id && right < id && left >= 0 && right >= 0)) {
        throw new UserError(
          `BPE merge ${rank} joins ids ${left} and ${right}, but only ids below ${id} exist at ` +
            `that point; the saved tokenizer is corrupt, so train it again`,
        );
      }
      this.#ranks.set(pairKey(left, right), rank);
      const bytes = new Uint8Array(this.#tokenBytes[left].length + this.#tokenBytes[right].length);
      bytes.set(this.#tokenBytes[left]);
      bytes.set(this.#tokenBytes[right], this.#tokenBytes[left].length);
      this.#tokenBytes.push(bytes);
    });
  }

  /** Number of token ids: 256 bytes plus one per merge. */
  get vocabSize(): number {
    return BYTE_VOCAB_SIZE + this.merges.length;
  }

  /**
   * Learns merges from `documents` (UTF-8 bytes) until the vocabulary has `vocabSize` ids or no
   * pair occurs twice; the result may therefore be smaller than requested. Each step merges the
   * most frequent adjacent pair, with ties going to the smaller (left, right) ids.
   *
   * Throws `UserError` when `vocabSize` is below 256 or above 65536, or a document is not UTF-8.
   */
  static train(documents: Uint8Array[], vocabSize: number): BpeTokenizer {
    checkVocabSize(vocabSize);

    const wordCounts = new Map<string, number>();
    for (const document of documents) {
      for (const match of decodeUtf8(document).matchAll(PRE_TOKEN)) {
        wordCounts.set(match[0], (wordCounts.get(match[0]) ?? 0) + 1);
      }
    }
    const encoder = new TextEncoder();
    const words = [...wordCounts].map(([word, count]) => ({
      ids: Array.from(encoder.encode(word)),
      count,
    }));

    // Pair counts weighted by word frequency, and the words each pair has occurred in. A merge
    // updates only the words that contain its pair; `wordsWithPair` may list words that no
    // longer contain it, which the update skips.
    const counts = new Map<number, number>();
    const wordsWithPair = new Map<number, Set<number>>();
    const countPairs = (index: number, sign: 1 | -1) => {
      const { ids, count } = words[index];
      for (let i = 0; i + 1 < ids.length; i++) {
        const key = pairKey(ids[i], ids[i + 1]);
        counts.set(key, (counts.get(key) ?? 0) + sign * count);
        if (sign > 0) {
          let set = wordsWithPair.get(key);
          if (set === undefined) wordsWithPair.set(key, set = new Set());
          set.add(index);
        }
      }
    };
    for (let index = 0; index < words.length; index++) countPairs(index, 1);

    const merges: [number, number][] = [];
    while (BYTE_VOCAB_SIZE + merges.length < vocabSize) {
      let bestKey = -1;
      let bestCount = 1;
      for (const [key, count] of counts) {
        if (count > bestCount || (count === bestCount && bestKey >= 0 && key < bestKey)) {
          bestKey = key;
          bestCount = count;
        }
      }
      if (bestKey < 0) break;

      const newId = BYTE_VOCAB_SIZE + merges.length;
      const [left, right] = unpackPair(bestKey);
      merges.push([left, right]);
      for (const index of wordsWithPair.get(bestKey)!) {
        if (!containsPair(words[index].ids, left, right)) continue;
        countPairs(index, -1);
        words[index].ids = mergePair(words[index].ids, left, right, newId);
        countPairs(index, 1);
      }
      counts.delete(bestKey);
      wordsWithPair.delete(bestKey);
    }
    return new BpeTokenizer(merges);
  }

  /** Rebuilds a tokenizer saved with `toJSON`; throws `UserError` on a malformed value. */
  static fromJSON(json: unknown): BpeTokenizer {
    const value = json as Partial<BpeTokenizerJson> | null;
    const valid = value !== null && typeof value === "object" && value.type === "bpe" &&
      value.version === 1 && Array.isArray(value.merges) &&
      value.merges.every((pair) =>
        Array.isArray(pair) && pair.length === 2 && pair.every((id) => Number.isInteger(id))
      ) &&
      value.vocabSize === BYTE_VOCAB_SIZE + value.merges.length;
    if (!valid) {
      throw new UserError(
        `the saved tokenizer is not a version 1 BPE tokenizer ({ type: "bpe", version: 1, ` +
          `vocabSize, merges }) with vocabSize = 256 + merges; train it again`,
      );
    }
    return new BpeTokenizer(value.merges!.map(([left, right]) => [left, right]));
  }

  toJSON(): BpeTokenizerJson {
    return {
      type: "bpe",
      version: 1,
      vocabSize: this.vocabSize,
      merges: this.merges.map(([left, right]) => [left, right]),
    };
  }

  /** Token ids of UTF-8 `bytes`; throws `UserError` when they are not valid UTF-8. */
  encode(bytes: Uint8Array): Int32Array {
    const encoder = new TextEncoder();
    const out: number[] = [];
    for (const match of decodeUtf8(bytes).matchAll(PRE_TOKEN)) {
      let ids = this.#cache.get(match[0]);
      if (ids === undefined) {
        ids = this.#encodeWord(Array.from(encoder.encode(match[0])));
        this.#cache.set(match[0], ids);
      }
      for (const id of ids) out.push(id);
    }
    return Int32Array.from(out);
  }

  /** Concatenates the bytes of a sequence of token ids. */
  decode(ids: ArrayLike<number>): Uint8Array {
    let length = 0;
    for (let i = 0; i < ids.length; i++) length += this.tokenBytes(ids[i]).length;
    const out = new Uint8Array(length);
    let offset = 0;
    for (let i = 0; i < ids.length; i++) {
      const bytes = this.tokenBytes(ids[i]);
      out.set(bytes, offset);
      offset += bytes.length;
    }
    return out;
  }

  /** Returns the bytes that token `id` encodes. */
  tokenBytes(id: number): Uint8Array {
    const bytes = this.#tokenBytes[id];
    if (bytes === undefined) {
      throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
    }
    return bytes;
  }

  /** Applies merges to one pre-token, lowest rank first, as in training order. */
  #encodeWord(ids: number[]): number[] {
    while (ids.length > 1) {
      let bestRank = Infinity;
      let bestIndex = -1;
      for (let i = 0; i + 1 < ids.length; i++) {
        const rank = this.#ranks.get(pairKey(ids[i], ids[i + 1]));
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          bestIndex = i;
        }
      }
      if (bestIndex < 0) break;
      const [left, right] = this.merges[bestRank];
      ids = mergePair(ids, left, right, BYTE_VOCAB_SIZE + bestRank);
    }
    return ids;
  }
}

/** Throws `UserError` unless 256 <= vocabSize <= 65536. */
export function checkVocabSize(vocabSize: number): void {
  if (!Number.isInteger(vocabSize) || vocabSize < BYTE_VOCAB_SIZE) {
    throw new UserError(
      `the tokenizer vocabulary size is ${vocabSize}, but the 256 byte tokens are always part ` +
        `of it so that any text can be encoded; choose an integer vocabSize >= 256`,
    );
  }
  if (vocabSize > MAX_VOCAB_SIZE) {
    throw new UserError(
      `the tokenizer vocabulary size is ${vocabSize}; choose vocabSize <= ${MAX_VOCAB_SIZE}`,
    );
  }
}

function pairKey(left: number, right: number): number {
  return left * MAX_VOCAB_SIZE + right;
}

function unpackPair(key: number): [number, number] {
  return [Math.floor(key / MAX_VOCAB_SIZE), key % MAX_VOCAB_SIZE];
}

/** Replaces each non-overlapping occurrence of (left, right), from the left, with `id`. */
function mergePair(ids: number[], left: number, right: number, id: number): number[] {
  if (!containsPair(ids, left, right)) return ids;
  const out: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    if (i + 1 < ids.length && ids[i] === left && ids[i + 1] === right) {
      out.push(id);
      i++;
    } else {
      out.push(ids[i]);
    }
  }
  return out;
}

function containsPair(ids: number[], left: number, right: number): boolean {
  for (let i = 0; i + 1 < ids.length; i++) {
    if (ids[i] === left && ids[i + 1] === right) return true;
  }
  return false;
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (error) {
    throw new UserError(
      `the BPE tokenizer reads UTF-8 text, but the input is not valid UTF-8; convert the corpus ` +
        `to UTF-8 or use the byte tokenizer`,
      { cause: error },
    );
  }
}
