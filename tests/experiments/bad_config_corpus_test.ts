/**
 * The malformed-config corpus in tests/fixtures/bad-configs/: every file must be rejected with
 * exit status 2, a message that names the file and the key path, and no stack trace.
 *
 * One `config --check` subprocess validates every file, so the test stays fast. A file's
 * `# expect: <text>` lines list fragments its message must contain; the files without them are
 * checked in detail by config_test.ts.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("../../experiments/cli.ts", import.meta.url));
const CORPUS = fileURLToPath(new URL("../fixtures/bad-configs/", import.meta.url));
const QUICKSTART = fileURLToPath(new URL("../../configs/quickstart.yaml", import.meta.url));

async function runCli(...args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", CLI, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function corpusFiles(): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(CORPUS)) {
    if (entry.name.endsWith(".yaml")) names.push(entry.name);
  }
  return names.sort();
}

function expectations(text: string): string[] {
  return [...text.matchAll(/^# expect: (.*)$/gm)].map((match) => match[1]);
}

const files = await corpusFiles();
const check = await runCli("config", "--check", ...files.map((name) => join(CORPUS, name)));
const blocks = new Map<string, string>();
for (const block of check.stdout.split(/^(?=check )/m).filter(Boolean)) {
  const path = block.slice("check ".length, block.indexOf(": "));
  blocks.set(path.slice(CORPUS.length), block);
}

Deno.test("corpus has at least 50 files", () => {
  assert.ok(files.length >= 50, `only ${files.length} files`);
});

Deno.test("corpus check exits 2 without stack", () => {
  assert.equal(check.code, 2, check.stderr);
  assert.doesNotMatch(check.stdout + check.stderr, /^\s+at /m);
});

for (const name of files) {
  Deno.test(`corpus ${name}`, async () => {
    const block = blocks.get(name) ?? "";
    const text = await Deno.readTextFile(join(CORPUS, name));

    assert.match(block, /: invalid\n/, `not rejected:\n${block}`);
    assert.ok(
      block.includes(`error: ${join(CORPUS, name)}`),
      `message does not name the file:\n${block}`,
    );
    for (const fragment of expectations(text)) {
      assert.ok(block.includes(fragment), `missing "${fragment}" in:\n${block}`);
    }
  });
}

Deno.test("corpus run invocations exit 2", async () => {
  const sample = ["empty-arms.yaml", "unknown-optimizer.yaml", "yaml-duplicate-arm.yaml"];
  const results = await Promise.all(sample.map((name) => runCli("run", join(CORPUS, name))));

  for (const [i, result] of results.entries()) {
    assert.equal(result.code, 2, `${sample[i]}: ${result.stderr}`);
    assert.match(result.stderr, /^error: /, sample[i]);
    assert.doesNotMatch(result.stderr, /^\s+at /m, sample[i]);
  }
});

Deno.test("config check accepts quickstart", async () => {
  const result = await runCli("config", "--check", QUICKSTART);

  assert.equal(result.code, 0, result.stdout + result.stderr);
  assert.match(result.stdout, /ok \(1 runs\)/);
});
