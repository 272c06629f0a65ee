/**
 * Plain-text corpora given by path: one UTF-8 file, or every file under a folder.
 */

import { join, relative } from "node:path";
import { UserError } from "../errors.ts";

/** One document of a corpus: a name for messages and its UTF-8 bytes. */
export interface TextDocument {
  name: string;
  bytes: Uint8Array;
}

/**
 * Reads a UTF-8 text file, or every regular file under a folder (recursively, in sorted path
 * order, skipping names that start with "."), as documents.
 *
 * Throws `UserError` when the path is missing, a file is empty or not valid UTF-8, or a folder
 * contains no files.
 */
export async function loadTextPath(path: string): Promise<TextDocument[]> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new UserError(
      `the text corpus path ${path} does not exist; give a UTF-8 text file or a folder of them ` +
        `(relative paths start at the working directory, ${Deno.cwd()})`,
      { cause: error },
    );
  }

  const files = info.isDirectory ? await listFiles(path) : [path];
  if (files.length === 0) {
    throw new UserError(
      `the text corpus folder ${path} contains no files; add UTF-8 text files or choose another ` +
        `folder`,
    );
  }

  const documents: TextDocument[] = [];
  for (const file of files) {
    const bytes = await Deno.readFile(file);
    const name = info.isDirectory ? relative(path, file) : file;
    checkText(file, bytes);
    documents.push({ name, bytes });
  }
  return documents;
}

async function listFiles(folder: string): Promise<string[]> {
  const files: string[] = [];
  const entries = [];
  for await (const entry of Deno.readDir(folder)) entries.push(entry);
  // Sorted by code unit, not by locale, so the order is the same on every machine.
  entries.sort((a, b) => compareNames(a.name, b.name));

  for (const entry of entries) {
    if (entry.name.startsWith(".")) continue;
    const path = join(folder, entry.name);
    if (entry.isDirectory) files.push(...await listFiles(path));
    else if (entry.isFile) files.push(path);
  }
  return files;
}

function compareNames(a: string, b: string): number {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}

function checkText(file: string, bytes: Uint8Array): void {
  if (bytes.length === 0) {
    throw new UserError(`the text file ${file} is empty; remove it or give a file with text`);
  }
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (error) {
    throw new UserError(
      `the text file ${file} is not valid UTF-8; convert it (for example with iconv -t UTF-8) ` +
        `or remove it from the corpus`,
      { cause: error },
    );
  }
}
