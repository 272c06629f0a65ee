/**
 * Error classes that decide how the CLI reports a failure.
 *
 * The CLI prints a `UserError` as `error: <message>` without a stack trace and exits with status 2,
 * because the fix is in the user's input (a config value, a path, a missing install). A `RunError`
 * is a failure during a run and exits with status 1.
 */

/** Invalid input from the user; the message names what was invalid, the value, and the fix. */
export class UserError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UserError";
  }
}

/** A failure while a run trains, evaluates or writes its results. */
export class RunError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RunError";
  }
}
