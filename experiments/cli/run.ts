/** `deno task run`: trains one config, or every run of an experiment plan, then reports. */

import type { Backend } from "../../kernels/backend.ts";
import { UserError } from "../errors.ts";
import { installInterruptHandler, INTERRUPTED_EXIT_CODE } from "../interrupt.ts";
import { loadPlan, parseShard, selectRuns } from "../plan.ts";
import { writeReport } from "../report/mod.ts";
import { releaseAllLocks } from "../run_lock.ts";
import { experimentDir, runPlan } from "../runner.ts";
import { train } from "../trainer.ts";
import {
  backendOverride,
  type Command,
  createBackend,
  parseCommandArgs,
  parseCount,
} from "./common.ts";

const USAGE = `usage: deno task run <config.yaml> [options]

Trains the experiment described by a YAML config. A config without arms, seeds or sweep is one
run in a new directory results/<experiment>/<time>-<hash>/. A config with them runs every
(arm, sweep point, seed) into results/<experiment>/<arm>-s<seed>-<hash>/, skips runs that are
done, restarts unfinished ones, and then writes the report.

options:
  --set key.path=value   override one config value in every run (repeatable), e.g.
                         --set train.steps=100; --set seeds=2 sets the number of seeds
  --backend webgpu|cpu   where to compute: webgpu (default, Deno's navigator.gpu) or cpu
                         (WebAssembly SIMD matrix products; needs no GPU)
  --index i              run only the run at position i of the plan (from 0); deno task config
                         <config.yaml> lists the positions
  --shard i/n            run the runs at positions i, i+n, i+2n, ... (0 <= i < n); shards may run
                         at the same time into one results folder
  --resume <run-dir>     continue a single run from its newest checkpoint (the config must be
                         the one the run was saved with, unless --force)
  --force                resume even when the config hash differs from the checkpoint's
  --no-report            do not write the report after the runs
  --help                 print this message

Ctrl-C finishes the current step, writes a checkpoint and exits; a second Ctrl-C exits at once.
Exit codes: 0 success, 1 a run failed, 2 invalid input, 130 interrupted.`;

export const runCommand: Command = {
  name: "run",
  summary: "train a config or every run of an experiment",
  usage: USAGE,
  async run(args) {
    const { values, positionals } = parseCommandArgs(args, {
      set: { type: "string", multiple: true },
      backend: { type: "string" },
      index: { type: "string" },
      shard: { type: "string" },
      "no-report": { type: "boolean" },
      resume: { type: "string" },
      force: { type: "boolean" },
      help: { type: "boolean" },
    }, USAGE);
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new UserError(
        `run takes exactly one config file, got ${positionals.length}\n\n${USAGE}`,
      );
    }

    const overrides = [...(values.set ?? []), ...backendOverride(values.backend)];
    const index = parseCount(values.index, "--index");
    const shard = values.shard === undefined ? undefined : parseShard(values.shard);
    if (index !== undefined && shard !== undefined) {
      throw new UserError("--index and --shard both select runs; give one of them");
    }

    const plan = await loadPlan(positionals[0], overrides);
    const backends = new Map<string, Backend>();
    const backendFor = async (name: "webgpu" | "cpu") => {
      const existing = backends.get(name);
      if (existing !== undefined) return existing;
      const backend = await createBackend(name);
      backends.set(name, backend);
      return backend;
    };

    // The first Ctrl-C asks the run to stop after its current step with a checkpoint; the
    // handler exits once the run has stopped.
    const controller = new AbortController();
    let markStopped = () => {};
    const stopped = new Promise<void>((resolve) => (markStopped = resolve));
    const removeHandler = installInterruptHandler({
      cleanup: async () => {
        controller.abort();
        await stopped;
        releaseAllLocks();
      },
    });

    try {
      if (
        values.resume !== undefined && (plan.planned || index !== undefined || shard !== undefined)
      ) {
        throw new UserError(
          "--resume continues one run; an experiment with arms, seeds or a sweep resumes its " +
            "unfinished runs by itself when run again",
        );
      }
      if (!plan.planned && index === undefined && shard === undefined) {
        const run = plan.runs[0];
        await train(run.config, {
          backend: await backendFor(run.config.backend),
          configText: run.text,
          signal: controller.signal,
          resume: values.resume === undefined
            ? undefined
            : { dir: values.resume, force: values.force ?? false },
        });
        return 0;
      }

      const selected = selectRuns(plan, { index, shard });
      const result = await runPlan(plan, selected, {
        backend: backendFor,
        signal: controller.signal,
      });
      console.log(
        `${plan.experiment}: ${result.completed.length} completed, ${result.skipped.length} done ` +
          `earlier, ${result.busy.length} claimed by other processes, ${result.failed.length} failed`,
      );
      for (const failure of result.failed) {
        console.error(`error: ${failure.id}: ${failure.message}`);
      }

      const whole = index === undefined && shard === undefined;
      if (plan.runs.length > 1 && !values["no-report"]) {
        if (whole) {
          const report = await writeReport(experimentDir(plan));
          console.log(`report: ${report.markdownPath} and ${report.htmlPath}`);
        } else {
          console.log(
            `when every shard has finished: deno task report ${experimentDir(plan)}`,
          );
        }
      }
      return result.failed.length > 0 ? 1 : 0;
    } catch (error) {
      if (!controller.signal.aborted) throw error;
      // Interrupted: the run has written its checkpoint and its message says how to resume.
      console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
      return INTERRUPTED_EXIT_CODE;
    } finally {
      markStopped();
      removeHandler();
      for (const backend of backends.values()) await backend.dispose();
    }
  },
};
