/**
 * Ctrl-C handling for long runs: the first SIGINT runs a cleanup and exits with status 130; a
 * second SIGINT exits at once.
 *
 * A signal listener runs between JavaScript tasks, and a metrics row is written by one
 * synchronous call, so the exit never leaves half a CSV row.
 */

/** Exit status of a process stopped by SIGINT (128 + signal number 2). */
export const INTERRUPTED_EXIT_CODE = 130;

/** Options for `installInterruptHandler`. */
export interface InterruptOptions {
  /** Runs once on the first Ctrl-C before the process exits: save state, release claims. */
  cleanup: () => Promise<void> | void;
  log?: (line: string) => void;
}

/** Installs the SIGINT listener; returns a function that removes it. */
export function installInterruptHandler(options: InterruptOptions): () => void {
  const log = options.log ?? ((line: string) => console.error(line));
  let interrupted = false;

  const listener = () => {
    if (interrupted) {
      log("interrupted again: exiting now");
      Deno.exit(INTERRUPTED_EXIT_CODE);
    }
    interrupted = true;
    log("interrupted: saving state and stopping; press Ctrl-C again to exit at once");

    Promise.resolve()
      .then(options.cleanup)
      .catch((error) => log(`cleanup after Ctrl-C failed: ${String(error)}`))
      .finally(() => Deno.exit(INTERRUPTED_EXIT_CODE));
  };

  Deno.addSignalListener("SIGINT", listener);
  return () => Deno.removeSignalListener("SIGINT", listener);
}
