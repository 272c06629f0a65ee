/** `deno task slurm`: writes an sbatch job-array script for an experiment. */

import { dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../errors.ts";
import { loadPlan } from "../plan.ts";
import { experimentDir } from "../runner.ts";
import { slurmPaths, slurmScript } from "../slurm.ts";
import { backendOverride, type Command, parseCommandArgs, parseCount } from "./common.ts";

const USAGE = `usage: deno task slurm <config.yaml> [options]

Writes results/<experiment>/slurm/<experiment>.sbatch: a SLURM job array with one array task per
run of the experiment, each running deno task run <config.yaml> --index <task id>. Logs go to
results/<experiment>/slurm/logs/. Prints the sbatch command that submits it.

options:
  --set key.path=value   override one config value in every run (repeatable)
  --backend webgpu|cpu   where each run computes
  --concurrency K        run at most K array tasks at once (sbatch --array=...%K)
  --time HH:MM:SS        wall-clock limit per array task (sbatch --time)
  --partition NAME       SLURM partition (sbatch --partition)
  --gpus N               GPUs per array task (sbatch --gpus-per-task)
  --cpus N               CPU cores per array task (sbatch --cpus-per-task)
  --help                 print this message`;

// The repository root: the job changes into it to run deno task.
const REPO_ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));

export const slurmCommand: Command = {
  name: "slurm",
  summary: "write an sbatch job-array script with one array task per run",
  usage: USAGE,
  async run(args) {
    const { values, positionals } = parseCommandArgs(args, {
      set: { type: "string", multiple: true },
      backend: { type: "string" },
      concurrency: { type: "string" },
      time: { type: "string" },
      partition: { type: "string" },
      gpus: { type: "string" },
      cpus: { type: "string" },
      help: { type: "boolean" },
    }, USAGE);
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new UserError(
        `slurm takes exactly one config file, got ${positionals.length}\n\n${USAGE}`,
      );
    }
    if (values.time !== undefined && !/^(\d+-)?\d+(:\d{2}){0,2}$/.test(values.time)) {
      throw new UserError(`--time is "${values.time}"; expected HH:MM:SS, for example 02:00:00`);
    }

    const overrides = [...(values.set ?? []), ...backendOverride(values.backend)];
    const plan = await loadPlan(positionals[0], overrides);
    const { scriptPath, logDir } = slurmPaths(plan);
    const script = slurmScript(plan, {
      configPath: relative(REPO_ROOT, Deno.realPathSync(positionals[0])),
      overrides,
      repoRoot: REPO_ROOT,
      concurrency: parseCount(values.concurrency, "--concurrency", 1),
      time: values.time,
      partition: values.partition,
      gpus: parseCount(values.gpus, "--gpus", 0),
      cpus: parseCount(values.cpus, "--cpus", 1),
    });

    // sbatch does not create the folder of --output, so it must exist before submission.
    await Deno.mkdir(logDir, { recursive: true });
    await Deno.writeTextFile(scriptPath, script);
    console.log(`wrote ${scriptPath}: ${plan.runs.length} array tasks`);
    console.log(`submit with:  sbatch ${scriptPath}`);
    console.log(
      `then report:  sbatch --dependency=afterany:<job id> --wrap "cd ${REPO_ROOT} && ` +
        `deno task report ${
          experimentDir(plan)
        }"   (or run deno task report when all have finished)`,
    );
    return 0;
  },
};
