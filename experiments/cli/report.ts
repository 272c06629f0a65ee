/** `deno task report`: writes report.md, report.html and plots for an experiment's results. */

import { UserError } from "../errors.ts";
import { writeReport } from "../report/mod.ts";
import { formatP } from "../report/summarize.ts";
import { type Command, parseCommandArgs } from "./common.ts";

const USAGE = `usage: deno task report <results/experiment>

Reads the runs in an experiment's results folder and writes into it report.md (mean ± std over
seeds per arm, Welch's t-test against the baseline arm, claims), report.html (the same tables
with interactive charts, no network needed) and plots/*.png.

options:
  --help   print this message`;

export const reportCommand: Command = {
  name: "report",
  summary: "write report.md, report.html and plots for a results folder",
  usage: USAGE,
  async run(args) {
    const { values, positionals } = parseCommandArgs(args, { help: { type: "boolean" } }, USAGE);
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new UserError(
        `report takes exactly one results folder, got ${positionals.length}\n\n${USAGE}`,
      );
    }

    const report = await writeReport(positionals[0]);
    for (const claim of report.claims) {
      console.log(
        `claim ${claim.claim.metric} ${claim.group} ${claim.claim.expect} vs ${claim.vsGroup}: ` +
          `${claim.status} (p ${formatP(claim.p)})`,
      );
    }
    console.log(
      `wrote ${report.markdownPath}, ${report.htmlPath} and ${report.plotPaths.length} plots`,
    );
    return 0;
  },
};
