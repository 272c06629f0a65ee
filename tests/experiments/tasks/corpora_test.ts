import assert from "node:assert/strict";
import { join } from "node:path";
import { loadBrown, stripTags } from "../../../experiments/data/brown.ts";
import { loadTextPath } from "../../../experiments/data/text_files.ts";
import { UserError } from "../../../experiments/errors.ts";

const decoder = new TextDecoder();

Deno.test("loadBrown documents and first sentence", async () => {
  const documents = await loadBrown();

  assert.equal(documents.length, 500);
  assert.equal(documents[0].name, "ca01");
  assert.equal(documents[499].name, "cr09");
  assert.ok(
    decoder.decode(documents[0].bytes).startsWith(
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary " +
        "election produced `` no evidence '' that any irregularities took place .\n",
    ),
  );
});

Deno.test("loadBrown strips every tag", async () => {
  const text = decoder.decode((await loadBrown())[0].bytes);

  assert.equal(text.includes("/at"), false);
  assert.equal(text.includes("/nn"), false);
});

Deno.test("stripTags keeps slashes inside words", () => {
  assert.equal(
    stripTags("\n\n\tA/at 1-1/2/cd inch/nn ./.\n\n\tNo/rb ./.\n"),
    "A 1-1/2 inch .\nNo .\n",
  );
});

Deno.test("loadTextPath missing path", async () => {
  await assert.rejects(
    () => loadTextPath("/nonexistent/corpus.txt"),
    (error: Error) =>
      error instanceof UserError && /\/nonexistent\/corpus\.txt does not exist/.test(error.message),
  );
});

Deno.test("loadTextPath empty file", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "empty.txt");
  await Deno.writeTextFile(file, "");

  await assert.rejects(
    () => loadTextPath(file),
    (error: Error) => error instanceof UserError && /empty\.txt is empty/.test(error.message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("loadTextPath invalid utf-8", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "latin1.txt");
  await Deno.writeFile(file, Uint8Array.of(0x63, 0x61, 0x66, 0xe9));

  await assert.rejects(
    () => loadTextPath(file),
    (error: Error) => error instanceof UserError && /not valid UTF-8/.test(error.message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("loadTextPath folder sorted without hidden files", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(join(dir, "b"));
  await Deno.writeTextFile(join(dir, "b", "one.txt"), "one\n");
  await Deno.writeTextFile(join(dir, "a.txt"), "a\n");
  await Deno.writeTextFile(join(dir, ".hidden"), "");

  const documents = await loadTextPath(dir);
  assert.deepEqual(documents.map((document) => document.name), ["a.txt", join("b", "one.txt")]);
  assert.equal(decoder.decode(documents[1].bytes), "one\n");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("loadTextPath empty folder", async () => {
  const dir = await Deno.makeTempDir();

  await assert.rejects(
    () => loadTextPath(dir),
    (error: Error) => error instanceof UserError && /contains no files/.test(error.message),
  );
  await Deno.remove(dir, { recursive: true });
});
