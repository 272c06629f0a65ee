import assert from "node:assert/strict";
import { UserError } from "../../../experiments/errors.ts";
import { BpeTokenizer } from "../../../experiments/tokenizer/bpe.ts";

const encoder = new TextEncoder();
const TEXT = encoder.encode(
  "the cat sat on the mat. the cat ate the rat. then the cat sat on the hat.\n".repeat(20),
);

Deno.test("BpeTokenizer round trip with unseen characters", () => {
  const tokenizer = BpeTokenizer.train([TEXT], 300);
  const text = encoder.encode("the naïve café — 猫 sat 🐈\n");

  assert.deepEqual(tokenizer.decode(tokenizer.encode(text)), text);
});

Deno.test("BpeTokenizer unseen bytes fall back to byte ids", () => {
  const tokenizer = BpeTokenizer.train([TEXT], 300);

  assert.deepEqual([...tokenizer.encode(encoder.encode("é"))], [0xc3, 0xa9]);
});

Deno.test("BpeTokenizer merges shorten encoding", () => {
  const tokenizer = BpeTokenizer.train([TEXT], 270);

  assert.equal(tokenizer.vocabSize, 270);
  assert.ok(tokenizer.encode(TEXT).length < TEXT.length / 2);
});

Deno.test("BpeTokenizer first merge most frequent pair", () => {
  const tokenizer = BpeTokenizer.train([encoder.encode("aaab aaab aaab")], 257);

  // Pre-tokens are "aaab" and " aaab" twice; "aa" occurs 2 times in each word, more than any
  // other pair.
  assert.deepEqual(tokenizer.merges[0], [97, 97]);
});

Deno.test("BpeTokenizer stops when no pair repeats", () => {
  const tokenizer = BpeTokenizer.train([encoder.encode("abcd")], 1000);

  assert.equal(tokenizer.vocabSize, 256);
});

Deno.test("BpeTokenizer training deterministic", () => {
  assert.deepEqual(BpeTokenizer.train([TEXT], 280).merges, BpeTokenizer.train([TEXT], 280).merges);
});

Deno.test("BpeTokenizer toJSON round trip", () => {
  const tokenizer = BpeTokenizer.train([TEXT], 270);
  const restored = BpeTokenizer.fromJSON(JSON.parse(JSON.stringify(tokenizer.toJSON())));

  assert.equal(restored.vocabSize, 270);
  assert.deepEqual(restored.encode(TEXT), tokenizer.encode(TEXT));
});

Deno.test("BpeTokenizer rejects vocabulary below 256", () => {
  assert.throws(
    () => BpeTokenizer.train([TEXT], 200),
    (error: Error) =>
      error instanceof UserError && /vocabulary size is 200.*vocabSize >= 256/.test(error.message),
  );
});

Deno.test("BpeTokenizer fromJSON rejects malformed value", () => {
  assert.throws(
    () => BpeTokenizer.fromJSON({ type: "bpe", version: 1, vocabSize: 300, merges: [] }),
    UserError,
  );
  assert.throws(
    () => BpeTokenizer.fromJSON({ type: "bpe", version: 1, vocabSize: 257, merges: [[256, 1]] }),
    UserError,
  );
});

Deno.test("BpeTokenizer rejects invalid utf-8", () => {
  assert.throws(() => BpeTokenizer.train([Uint8Array.of(0x61, 0xff, 0x62)], 300), UserError);
});
