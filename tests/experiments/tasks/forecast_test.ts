import assert from "node:assert/strict";
import { join } from "node:path";
import { loadVegaSeries, parseSeriesCsv } from "../../../experiments/data/csv_series.ts";
import { UserError } from "../../../experiments/errors.ts";
import {
  createForecastTask,
  ForecastData,
  ForecastTaskOptions,
} from "../../../experiments/tasks/forecast.ts";
import { createCpuBackend } from "../../../kernels/cpu/backend.ts";
import { Rng } from "../../../tensor/mod.ts";
import { TINY_MODEL, trainTask } from "./_train.ts";

const SPLITS = { valFraction: 0.1, testFraction: 0.2 };

Deno.test("loadVegaSeries hourly first rows", async () => {
  const series = await loadVegaSeries("seattle-weather-hourly");

  assert.equal(series.rows, 8759);
  assert.deepEqual(series.columns, ["pressure", "temperature", "wind"]);
  assert.equal(series.dates[0], "2010-01-01T01:00:00");
  assert.deepEqual([...series.values.subarray(0, 3)], [1016.6, 4.0, 3.8]);
});

Deno.test("loadVegaSeries daily drops text column", async () => {
  const series = await loadVegaSeries("seattle-weather");

  assert.equal(series.rows, 1461);
  assert.deepEqual(series.columns, ["precipitation", "temp_max", "temp_min", "wind"]);
  assert.deepEqual([...series.values.subarray(4, 8)], [10.9, 10.6, 2.8, 4.5]);
});

Deno.test("loadVegaSeries sp500 first row", async () => {
  const series = await loadVegaSeries("sp500", ["close"]);

  assert.equal(series.rows, 5105);
  assert.equal(series.values[0], 1455.219971);
});

Deno.test("parseSeriesCsv names row and column of bad value", () => {
  const text = "date,a,b\n2020-01-01,1,2\n2020-01-02,3,n/a\n";

  assert.throws(
    () => parseSeriesCsv(text, "bad.csv"),
    (error: Error) =>
      error instanceof UserError &&
      /line 3 of bad\.csv, column "b": "n\/a" is not a number/.test(error.message),
  );
});

Deno.test("parseSeriesCsv empty cell", () => {
  assert.throws(
    () => parseSeriesCsv("date,a\n2020-01-01,\n", "gap.csv"),
    (error: Error) =>
      error instanceof UserError && /line 2 of gap\.csv, column "a"/.test(error.message),
  );
});

Deno.test("parseSeriesCsv unknown column", () => {
  assert.throws(
    () => parseSeriesCsv("date,a\n2020-01-01,1\n", "x.csv", ["OT"]),
    (error: Error) =>
      error instanceof UserError && /"OT".*columns after the date are a/.test(error.message),
  );
});

Deno.test("createForecastTask missing path", async () => {
  await assert.rejects(
    () =>
      createForecastTask(createCpuBackend(), { dataset: "path", path: "/nonexistent/ETTh1.csv" }),
    (error: Error) => error instanceof UserError && /ETTh1\.csv does not exist/.test(error.message),
  );
});

Deno.test("createForecastTask ETT layout file", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "ETTh1.csv");
  const rows = ["date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT"];
  for (let t = 0; t < 200; t++) {
    const hour = String(t % 24).padStart(2, "0");
    rows.push(
      `2016-07-01 ${hour}:00:00,${[1, 2, 3, 4, 5, 6, 7].map((c) => c * Math.sin(t / 5)).join(",")}`,
    );
  }
  await Deno.writeTextFile(path, rows.join("\n") + "\n");

  const task = await createForecastTask(createCpuBackend(), {
    dataset: "path",
    path,
    lookback: 16,
    horizon: 4,
    patchLen: 4,
  });
  assert.equal(task.data.channels, 7);
  assert.deepEqual(task.data.splits.train, { start: 0, end: 140 });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("ForecastData lookback longer than series", async () => {
  const series = await loadVegaSeries("seattle-weather");

  assert.throws(
    () => new ForecastData(series, { lookback: 2000, horizon: 24, ...SPLITS }),
    (error: Error) =>
      error instanceof UserError && /lookback is 2000.*only 1461 rows/.test(error.message),
  );
});

Deno.test("ForecastData window longer than validation split", async () => {
  const series = await loadVegaSeries("seattle-weather");

  assert.throws(
    () => new ForecastData(series, { lookback: 120, horizon: 40, ...SPLITS }),
    (error: Error) => error instanceof UserError && /validation split/.test(error.message),
  );
});

Deno.test("ForecastData normalisation fitted on training rows", () => {
  // Training rows 0..13 hold 0..13 (mean 6.5); the later rows are 1000, which must not shift it.
  const values = [...Array.from({ length: 14 }, (_, i) => i), ...new Array(6).fill(1000)];
  const series = {
    source: "test",
    dates: values.map((_, i) => `${i}`),
    columns: ["x"],
    values: Float64Array.from(values),
    rows: values.length,
  };
  const data = new ForecastData(series, {
    lookback: 1,
    horizon: 1,
    valFraction: 0.15,
    testFraction: 0.15,
  });
  const std = Math.sqrt((14 * 14 - 1) / 12);

  assert.deepEqual(data.splits.train, { start: 0, end: 14 });
  assert.equal(data.mean[0], 6.5);
  assert.ok(Math.abs(data.std[0] - std) < 1e-12);
  assert.ok(Math.abs(data.normalized[0] + 6.5 / std) < 1e-12);
  assert.ok(Math.abs(data.normalized[14] - (1000 - 6.5) / std) < 1e-9);
});

Deno.test("ForecastData hourly splits disjoint", async () => {
  const data = new ForecastData(await loadVegaSeries("seattle-weather-hourly"), {
    lookback: 48,
    horizon: 12,
    ...SPLITS,
  });
  const { train, validation, test } = data.splits;

  assert.equal(train.end, validation.start);
  assert.equal(validation.end, test.start);
  const rng = new Rng(0);
  for (let i = 0; i < 50; i++) {
    for (const start of data.trainWindows(rng, 32).starts) {
      assert.ok(
        start + 48 + 12 <= train.end,
        `training window at ${start} reaches row ${train.end}`,
      );
    }
  }
  for (const split of ["validation", "test"] as const) {
    for (const windows of data.fixedWindows(split, 8, 4)) {
      for (const start of windows.starts) {
        assert.ok(start >= data.splits[split].start, `${split} window at ${start}`);
        assert.ok(start + 60 <= data.splits[split].end, `${split} window at ${start}`);
      }
    }
  }
});

Deno.test("ForecastData windows copy normalised rows", async () => {
  const data = new ForecastData(await loadVegaSeries("seattle-weather-hourly"), {
    lookback: 4,
    horizon: 2,
    ...SPLITS,
  });
  const windows = data.windows([10]);

  // Row 10, column 1 (temperature), and row 14 (the first horizon step), column 1.
  assert.ok(Math.abs(windows.inputs[1] - data.normalized[10 * 3 + 1]) < 1e-6);
  assert.ok(Math.abs(windows.targets[1] - data.normalized[14 * 3 + 1]) < 1e-6);
});

Deno.test("ForecastTask options reject lookback not multiple of patchLen", async () => {
  await assert.rejects(
    () =>
      createForecastTask(
        createCpuBackend(),
        ForecastTaskOptions.parse({ lookback: 50, patchLen: 16 }),
      ),
    (error: Error) => error instanceof UserError && /multiple of patchLen/.test(error.message),
  );
});

Deno.test("ForecastTask training beats mean forecast", async () => {
  const backend = createCpuBackend();
  const task = await createForecastTask(
    backend,
    { dataset: "seattle-weather-hourly", lookback: 48, horizon: 12, patchLen: 12 },
    TINY_MODEL,
  );
  const batchSize = 16;
  const batches = 4;
  let meanForecastMse = 0;
  let count = 0;
  for (const windows of task.data.fixedWindows("validation", batchSize, batches)) {
    for (const value of windows.targets) meanForecastMse += value * value;
    count += windows.targets.length;
  }
  meanForecastMse /= count;

  const started = performance.now();
  const { model } = await trainTask(task, backend, { steps: 150, batchSize, lr: 3e-3 });
  const metrics = await task.evaluate(model, batchSize, batches);
  model.dispose();
  console.log(
    `forecast: ${JSON.stringify(metrics)}, mean forecast mse ${meanForecastMse.toFixed(4)}, ` +
      `${Math.round(performance.now() - started)} ms`,
  );

  assert.ok(metrics.mse < 0.5 * meanForecastMse, `mse ${metrics.mse} vs ${meanForecastMse}`);
});
