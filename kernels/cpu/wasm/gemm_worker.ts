/**
 * The worker side of the two-thread matmul: it compiles the gemm kernel on the shared memory it is
 * given, then waits on the control block and computes the tile rows the main thread hands it.
 * Started by `WasmGemm` through node:worker_threads, whose `unref` lets the process exit while
 * this thread waits.
 */

import { workerData } from "node:worker_threads";
import { gemmKernels } from "./gemm_kernel.ts";
import { CONTROL, readJob, runTileRows, STATUS_DONE, STATUS_FAILED } from "./gemm_tiles.ts";

interface GemmWorkerData {
  memory: WebAssembly.Memory;
  control: Int32Array;
  bytes: Uint8Array<ArrayBuffer>;
  mr: number;
}

const { memory, control, bytes, mr } = workerData as GemmWorkerData;
const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
const kernels = gemmKernels(instance, mr);

Atomics.store(control, CONTROL.READY, 1);
Atomics.notify(control, CONTROL.READY);
let sequence = Atomics.load(control, CONTROL.SEQUENCE);
while (true) {
  Atomics.wait(control, CONTROL.SEQUENCE, sequence);
  sequence = Atomics.load(control, CONTROL.SEQUENCE);
  if (Atomics.load(control, CONTROL.STOP) === 1) break;

  let status = STATUS_DONE;
  try {
    runTileRows(kernels, readJob(control), control[CONTROL.FROM], control[CONTROL.TO]);
  } catch (error) {
    console.error(`gemm worker: tile rows failed: ${error}`);
    status = STATUS_FAILED;
  }
  Atomics.store(control, CONTROL.STATUS, status);
  Atomics.notify(control, CONTROL.STATUS);
}
