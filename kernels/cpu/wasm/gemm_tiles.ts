/**
 * A batched product split into rows of tiles, so the main thread and a worker can each compute a
 * share of C. Both sides run `runTileRows` on the same `TileJob` against one shared memory.
 */

import type { GemmKernels } from "./gemm_kernel.ts";

/** Byte addresses and strides of one batched product in linear memory, as `WasmGemm` lays it out. */
export interface TileJob {
  a: number;
  b: number;
  c: number;
  /** Bytes between batch entries of A; 0 when A is shared by every entry. */
  aEntryBytes: number;
  /** Bytes between batch entries of B; 0 when B is shared by every entry. */
  bEntryBytes: number;
  cEntryBytes: number;
  /** Rows of C in each batch entry; the last tile row of an entry may hold fewer than mr. */
  m: number;
  mTiles: number;
  nTiles: number;
  /** Tile columns per kernel call: the product runs column block by column block. */
  nBlockTiles: number;
  /** Bytes of one packed panel of B (k·nr floats). */
  bPanelBytes: number;
  /** Bytes of one tile's row of C (nr floats). */
  cTileBytes: number;
  k: number;
  aTileBytes: number;
  aRowBytes: number;
  aStepBytes: number;
  ldcBytes: number;
  /** Rows of C per tile. */
  mr: number;
}

/** The fields of `TileJob` in the order they are stored in the control block. */
export const TILE_JOB_FIELDS = [
  "a",
  "b",
  "c",
  "aEntryBytes",
  "bEntryBytes",
  "cEntryBytes",
  "m",
  "mTiles",
  "nTiles",
  "nBlockTiles",
  "bPanelBytes",
  "cTileBytes",
  "k",
  "aTileBytes",
  "aRowBytes",
  "aStepBytes",
  "ldcBytes",
  "mr",
] as const;

/**
 * Layout of the Int32Array control block shared with the worker. The main thread writes the job
 * and the worker's range of tile rows, sets STATUS to BUSY and bumps SEQUENCE; the worker computes
 * its range and sets STATUS to DONE or FAILED.
 */
export const CONTROL = {
  READY: 0,
  SEQUENCE: 1,
  STATUS: 2,
  STOP: 3,
  FROM: 4,
  TO: 5,
  JOB: 6,
  LENGTH: 6 + TILE_JOB_FIELDS.length,
} as const;

export const STATUS_BUSY = 0;
export const STATUS_DONE = 1;
export const STATUS_FAILED = 2;

/**
 * Computes tile rows [from, to) of the product, counting tile rows across batch entries (entry e
 * contains rows e·mTiles … (e + 1)·mTiles − 1). Within each entry the rows run once per block of
 * nBlockTiles tile columns, so that block's panels of B stay in the cache while every row reads
 * them. Whole tiles take one kernel call per block, and an entry's last tile row, when it has
 * fewer than mr rows, one call of the kernel for that many rows.
 */
export function runTileRows(kernels: GemmKernels, job: TileJob, from: number, to: number): void {
  const lastRows = job.m - (job.mTiles - 1) * job.mr;
  let row = from;
  while (row < to) {
    const entry = Math.floor(row / job.mTiles);
    const first = row - entry * job.mTiles;
    const last = Math.min(job.mTiles, to - entry * job.mTiles);
    const whole = lastRows === job.mr || last < job.mTiles ? last : last - 1;

    for (let column = 0; column < job.nTiles; column += job.nBlockTiles) {
      const columns = Math.min(job.nBlockTiles, job.nTiles - column);
      const call = (rows: number, tileRow: number, count: number) =>
        kernels.byRows[rows](
          job.a + entry * job.aEntryBytes + tileRow * job.aTileBytes,
          job.b + entry * job.bEntryBytes + column * job.bPanelBytes,
          job.c + entry * job.cEntryBytes + tileRow * job.mr * job.ldcBytes +
            column * job.cTileBytes,
          count,
          columns,
          job.k,
          job.aTileBytes,
          job.aRowBytes,
          job.aStepBytes,
          job.ldcBytes,
        );
      if (whole > first) call(job.mr, first, whole - first);
      if (whole < last) call(lastRows, whole, 1);
    }
    row = entry * job.mTiles + last;
  }
}

export function writeJob(control: Int32Array, job: TileJob): void {
  TILE_JOB_FIELDS.forEach((field, i) => control[CONTROL.JOB + i] = job[field]);
}

export function readJob(control: Int32Array): TileJob {
  const job = {} as TileJob;
  TILE_JOB_FIELDS.forEach((field, i) => job[field] = control[CONTROL.JOB + i]);
  return job;
}
