import assert from "node:assert/strict";
import { join } from "node:path";
import { loadImage } from "@napi-rs/canvas";
import { plotLines } from "../../experiments/plot.ts";

// Every test writes below this folder, which is removed when the test module unloads.
const TEMP_ROOT = await Deno.makeTempDir({ prefix: "moelab-plot-test-" });
addEventListener("unload", () => Deno.removeSync(TEMP_ROOT, { recursive: true }));

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

async function drawLossPlot(): Promise<string> {
  const path = join(await Deno.makeTempDir({ dir: TEMP_ROOT }), "loss.png");
  const train = Array.from({ length: 60 }, (_, i) => ({ x: i * 10, y: 5.5 * Math.exp(-i / 20) }));
  const validation = [{ x: 0, y: 5.6 }, { x: 300, y: NaN }, { x: 590, y: 1.2 }];

  await plotLines(path, {
    title: "loss",
    xLabel: "step",
    yLabel: "cross-entropy (nats)",
    series: [{ label: "train", points: train }, { label: "validation", points: validation }],
  });
  return path;
}

Deno.test("plotLines writes png signature", async () => {
  const bytes = await Deno.readFile(await drawLossPlot());

  assert.deepEqual([...bytes.subarray(0, 8)], PNG_SIGNATURE);
});

Deno.test("plotLines png decodes to 800x500", async () => {
  const image = await loadImage(await Deno.readFile(await drawLossPlot()));

  assert.equal(image.width, 800);
  assert.equal(image.height, 500);
});

Deno.test("plotLines custom size", async () => {
  const path = join(await Deno.makeTempDir({ dir: TEMP_ROOT }), "small.png");
  await plotLines(path, {
    title: "t",
    xLabel: "x",
    yLabel: "y",
    series: [{ label: "a", points: [{ x: 0, y: 1 }, { x: 1, y: 2 }] }],
    width: 320,
    height: 200,
  });

  const image = await loadImage(await Deno.readFile(path));

  assert.equal(image.width, 320);
  assert.equal(image.height, 200);
});

Deno.test("plotLines empty series", async () => {
  const path = join(await Deno.makeTempDir({ dir: TEMP_ROOT }), "empty.png");
  await plotLines(path, { title: "no data", xLabel: "step", yLabel: "loss", series: [] });

  const bytes = await Deno.readFile(path);

  assert.deepEqual([...bytes.subarray(0, 8)], PNG_SIGNATURE);
});
