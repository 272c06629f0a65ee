/**
 * A batched product split into rows of tiles, so the main thread and a worker can each compute a
 * share of C. Both sides run `runTileRows` on the same `TileJob` against one shared memory.
 */

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
  mTiles: number;
  nTiles: number;
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
  "mTiles",
  "nTiles",
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

type GemmFunction = (...args: number[]) => void;

/**
 * Computes tile rows [from, to) of the product, counting tile rows across batch entries (entry e
 * contains rows e·mTiles … (e + 1)·mTiles − 1), with one kernel call per entry touched.
 */
export function runTileRows(gemm: GemmFunction, job: TileJob, from: number, to: number): void {
  let row = from;
  while (row < to) {
    const entry = Math.floor(row / job.mTiles);
    const first = row - entry * job.mTiles;
    const last = Math.min(job.mTiles, to - entry * job.mTiles);
    gemm(
      job.a + entry * job.aEntryBytes + first * job.aTileBytes,
      job.b + entry * job.bEntryBytes,
      job.c + entry * job.cEntryBytes + first * job.mr * job.ldcBytes,
      last - first,
      job.nTiles,
      job.k,
      job.aTileBytes,
      job.aRowBytes,
      job.aStepBytes,
      job.ldcBytes,
    );
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
