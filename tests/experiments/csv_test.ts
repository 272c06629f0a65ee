import assert from "node:assert/strict";
import { join } from "node:path";
import { CsvWriter, readCsv } from "../../experiments/csv.ts";

// Every test writes below this folder, which is removed when the test module unloads.
const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-csv-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

async function tempCsvPath(): Promise<string> {
  return join(await Deno.makeTempDir({ dir: TEMP_ROOT }), "metrics.csv");
}

Deno.test("CsvWriter writes header and rows", async () => {
  const path = await tempCsvPath();
  const csv = await CsvWriter.create(path, ["step", "loss"]);
  csv.write({ step: 1, loss: 5.5 });
  csv.write({ step: 2, loss: 4.25 });
  csv.close();

  assert.equal(await Deno.readTextFile(path), "step,loss\n1,5.5\n2,4.25\n");
});

Deno.test("CsvWriter row is on disk before close", async () => {
  const path = await tempCsvPath();
  const csv = await CsvWriter.create(path, ["step", "loss"]);
  csv.write({ step: 1, loss: 2 });
  const text = await Deno.readTextFile(path);
  csv.close();

  assert.equal(text, "step,loss\n1,2\n");
});

Deno.test("CsvWriter non-finite numbers", async () => {
  const path = await tempCsvPath();
  const csv = await CsvWriter.create(path, ["a", "b", "c"]);
  csv.write({ a: NaN, b: Infinity, c: -Infinity });
  csv.close();

  assert.equal(await Deno.readTextFile(path), "a,b,c\nNaN,Infinity,-Infinity\n");
});

Deno.test("CsvWriter quotes commas and quotes", async () => {
  const path = await tempCsvPath();
  const csv = await CsvWriter.create(path, ["name", "note"]);
  csv.write({ name: "a,b", note: 'say "hi"' });
  csv.close();

  assert.equal(await Deno.readTextFile(path), 'name,note\n"a,b","say ""hi"""\n');
});

Deno.test("CsvWriter missing column is empty", async () => {
  const path = await tempCsvPath();
  const csv = await CsvWriter.create(path, ["step", "valLoss"]);
  csv.write({ step: 3 });
  csv.close();

  assert.equal(await Deno.readTextFile(path), "step,valLoss\n3,\n");
});

Deno.test("CsvWriter unknown key throws", async () => {
  const path = await tempCsvPath();
  const csv = await CsvWriter.create(path, ["step"]);

  assert.throws(() => csv.write({ step: 1, lose: 2 }), /"lose" is not a column/);
  csv.close();
});

Deno.test("CsvWriter existing file rejected", async () => {
  const path = await tempCsvPath();
  await Deno.writeTextFile(path, "step\n1\n");

  await assert.rejects(() => CsvWriter.create(path, ["step"]), Deno.errors.AlreadyExists);
});

Deno.test("CsvWriter append keeps rows and header", async () => {
  const path = await tempCsvPath();
  const first = await CsvWriter.create(path, ["step"]);
  first.write({ step: 1 });
  first.close();

  const second = await CsvWriter.create(path, ["step"], { append: true });
  second.write({ step: 2 });
  second.close();

  assert.equal(await Deno.readTextFile(path), "step\n1\n2\n");
});

Deno.test("readCsv non-finite numbers round-trip", async () => {
  const path = await tempCsvPath();
  const csv = await CsvWriter.create(path, ["a", "b", "c", "d"]);
  csv.write({ a: NaN, b: Infinity, c: -Infinity, d: 1.5e-7 });
  csv.close();

  const [row] = await readCsv(path);

  assert.ok(Number.isNaN(row.a));
  assert.equal(row.b, Infinity);
  assert.equal(row.c, -Infinity);
  assert.equal(row.d, 1.5e-7);
});

Deno.test("readCsv trailing newline adds no row", async () => {
  const path = await tempCsvPath();
  await Deno.writeTextFile(path, "step,loss\n1,2\n2,1\n");

  const rows = await readCsv(path);

  assert.equal(rows.length, 2);
});

Deno.test("readCsv header only is empty", async () => {
  const path = await tempCsvPath();
  await Deno.writeTextFile(path, "step,loss\n");

  assert.deepEqual(await readCsv(path), []);
});

Deno.test("readCsv keeps text and empty cells", async () => {
  const path = await tempCsvPath();
  await Deno.writeTextFile(path, 'split,loss,note\nval,,"a,b"\n');

  const rows = await readCsv(path);

  assert.deepEqual(rows, [{ split: "val", loss: "", note: "a,b" }]);
});

Deno.test("readCsv numeric forms", async () => {
  const path = await tempCsvPath();
  await Deno.writeTextFile(path, "a,b,c,d,e\n-3,.5,2.,1e3,0x10\n");

  const [row] = await readCsv(path);

  assert.deepEqual(row, { a: -3, b: 0.5, c: 2, d: 1000, e: "0x10" });
});

Deno.test("readCsv ragged row throws", async () => {
  const path = await tempCsvPath();
  await Deno.writeTextFile(path, "a,b\n1,2,3\n");

  await assert.rejects(() => readCsv(path), /invalid CSV in .*metrics\.csv, data row 1/);
});
