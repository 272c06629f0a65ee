/** Reports from a hand-made results folder with known means and a known t statistic. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { loadImage } from "@napi-rs/canvas";
import { writeReport } from "../../experiments/report/mod.ts";
import { decide } from "../../experiments/report/summarize.ts";

const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-report-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

const CHROMIUM = "/usr/bin/chromium";

// Final val_loss per seed: baseline 4, 5, 6 (mean 5, std 1) and wide 1, 2, 3 (mean 2, std 1),
// so wide - baseline = -3, t = -3 / sqrt(2/3) = -3.6742 with 4 degrees of freedom, p = 0.0213.
const FINALS: Record<string, number[]> = { baseline: [4, 5, 6], wide: [1, 2, 3] };

async function writeRun(folder: string, id: string, finalLoss: number, extras: boolean) {
  const dir = join(folder, id);
  await Deno.mkdir(dir, { recursive: true });
  const rows = ["step,train_loss,val_loss,lr,grad_norm,tokens_per_s,elapsed_s"];
  rows.push(`1,${finalLoss + 2},,0.001,1,100,0.1`);
  rows.push(`2,${finalLoss + 1},${finalLoss + 0.5},0.001,1,100,0.2`);
  rows.push(`3,${finalLoss + 0.5},${finalLoss},0.001,1,100,0.3`);
  await Deno.writeTextFile(join(dir, "metrics.csv"), rows.join("\n") + "\n");
  await Deno.writeTextFile(join(dir, "done"), "{}\n");
  if (!extras) return;

  const routing = ["step,layer,expert,load,fluctuation"];
  for (const step of [1, 2, 3]) {
    for (const expert of [0, 1, 2, 3]) {
      routing.push(`${step},0,${expert},${expert === 0 ? 0.4 : 0.2},${0.3 / step}`);
    }
  }
  await Deno.writeTextFile(join(dir, "routing.csv"), routing.join("\n") + "\n");
  const attention = ["step,layer,head,sink_rate", "1,0,0,0.1", "2,0,0,0.3", "3,0,0,0.5"];
  await Deno.writeTextFile(join(dir, "attention.csv"), attention.join("\n") + "\n");
}

async function handMadeFolder(): Promise<string> {
  const folder = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const runs = [];
  for (const [arm, finals] of Object.entries(FINALS)) {
    for (const [seed, final] of finals.entries()) {
      const id = `${arm}-s${seed}-000000000000`;
      runs.push({ index: runs.length, id, arm, seed, point: 0, pointValues: {}, group: arm });
      await writeRun(folder, id, final, true);
    }
  }
  // A planned run that never started.
  runs.push({
    index: 6,
    id: "wide-s3-000000000000",
    arm: "wide",
    seed: 3,
    point: 0,
    pointValues: {},
    group: "wide",
  });

  const plan = {
    experiment: "hand-made",
    source: "hand-made.yaml",
    arms: ["baseline", "wide"],
    baseline: "baseline",
    seeds: [0, 1, 2, 3],
    points: [{}],
    claims: [
      { metric: "val_loss", arm: "wide", vs: "baseline", expect: "lower", at: "final" },
      { metric: "val_loss", arm: "wide", vs: "baseline", expect: "higher", at: "final" },
      {
        metric: "val_loss",
        arm: "wide",
        vs: "baseline",
        expect: "equal",
        within: 0.5,
        at: "final",
      },
    ],
    runs,
  };
  await Deno.writeTextFile(join(folder, "plan.json"), JSON.stringify(plan));
  return folder;
}

const folder = await handMadeFolder();
const report = await writeReport(folder);
const markdown = await Deno.readTextFile(report.markdownPath);

Deno.test("report means and std", () => {
  const wide = report.summaries.find((s) => s.arm === "wide")!;
  const baseline = report.summaries.find((s) => s.arm === "baseline")!;

  assert.equal(baseline.metrics.val_loss.final.mean, 5);
  assert.equal(baseline.metrics.val_loss.final.std, 1);
  assert.equal(wide.metrics.val_loss.final.mean, 2);
  assert.equal(wide.completed, 3);
  assert.equal(wide.planned, 4);
});

Deno.test("report welch t against baseline", () => {
  const test = report.summaries.find((s) => s.arm === "wide")!.metrics.val_loss.vsBaseline!;

  assert.ok(Math.abs(test.t - -3.6742346141747673) < 1e-12, `t ${test.t}`);
  assert.ok(Math.abs(test.p - 0.02131164113) < 1e-9, `p ${test.p}`);
});

Deno.test("report markdown rows", () => {
  assert.match(markdown, /\| baseline \(baseline\) \| 3\/3 \| 5\.0000 ± 1\.0000 \|/);
  assert.match(
    markdown,
    /\| wide \| 3\/4 \| 2\.0000 ± 1\.0000 \| 2\.0000 ± 1\.0000 \| -3\.0000 \| -3\.6742 \| 0\.0213 \|/,
  );
  assert.match(markdown, /1 not started/);
  assert.match(markdown, /!\[.*val_loss.*\]\(plots\/metric-val_loss\.png\)/);
});

Deno.test("report claim statuses", () => {
  const statuses = report.claims.map((claim) => claim.status);

  assert.deepEqual(statuses, ["held", "not held", "not held"]);
  assert.match(markdown, /\| final val_loss: wide lower vs baseline \| held \|/);
});

Deno.test("claim inconclusive without evidence", () => {
  const claim = {
    metric: "val_loss",
    arm: "a",
    vs: "b",
    expect: "lower" as const,
    at: "final" as const,
  };

  assert.equal(decide(claim, [1, 2], [1.1, 2.1]).status, "inconclusive");
  assert.equal(decide(claim, [1], [2]).status, "inconclusive");
});

Deno.test("report pngs parse", async () => {
  const names = report.plotPaths.map((path) => path.split("/").at(-1));

  assert.ok(names.includes("metric-val_loss.png"));
  assert.ok(names.includes("routing-load-0.png"));
  assert.ok(names.includes("routing-fluctuation.png"));
  assert.ok(names.includes("attention-sink.png"));
  for (const path of report.plotPaths) {
    const image = await loadImage(await Deno.readFile(path));
    assert.equal(image.width, 800, path);
    assert.equal(image.height, 500, path);
  }
});

Deno.test("report html is self-contained", async () => {
  const html = await Deno.readTextFile(report.htmlPath);

  assert.match(html, /^<!doctype html>/);
  assert.doesNotMatch(html, /<script[^>]+src=/);
  assert.doesNotMatch(html, /<link[^>]+href=/);
  assert.equal(html.match(/<canvas /g)?.length, report.plotPaths.length);
  assert.match(html, /<td>-3\.6742<\/td>/);
});

Deno.test("report html draws in chromium", async () => {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    console.log(`skipped: ${CHROMIUM} not found; install Debian's chromium package to run this`);
    return;
  }
  const profile = await Deno.makeTempDir({ dir: TEMP_ROOT });
  const output = await new Deno.Command(CHROMIUM, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--no-first-run",
      `--user-data-dir=${profile}`,
      "--dump-dom",
      `file://${report.htmlPath}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dom = new TextDecoder().decode(output.stdout);
  const status = /id="moelab-status">([^<]*)</.exec(dom)?.[1];

  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.equal(status, `charts drawn: ${report.plotPaths.length}/${report.plotPaths.length}`);
});

Deno.test("report on missing folder", async () => {
  await assert.rejects(() => writeReport(join(TEMP_ROOT, "nope")), /results folder not found/);
});
