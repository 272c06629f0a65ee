import assert from "node:assert/strict";
import { formatDuration, Progress, type ProgressOutput } from "../../experiments/progress.ts";

/** A fake stdout that records what is written. */
class RecordingOutput implements ProgressOutput {
  text = "";
  #terminal: boolean;
  #decoder = new TextDecoder();

  constructor(terminal: boolean) {
    this.#terminal = terminal;
  }

  writeSync(bytes: Uint8Array): number {
    this.text += this.#decoder.decode(bytes);
    return bytes.length;
  }

  isTerminal(): boolean {
    return this.#terminal;
  }
}

/** Creates a clock that advances only when the test sets `ms`. */
function manualClock() {
  const clock = { ms: 0, now: () => clock.ms };
  return clock;
}

Deno.test("Progress terminal line with eta", () => {
  const output = new RecordingOutput(true);
  const clock = manualClock();
  const progress = new Progress({ output, now: clock.now });

  progress.update(100, 600, "loss 2.41");
  clock.ms = 20_000;
  progress.update(120, 600, "loss 2.40");

  // 20 steps took 20 s, so the remaining 480 steps take 480 s = 8m00s.
  assert.ok(output.text.endsWith("\rstep 120/600   20%  eta 8m00s  loss 2.40\x1b[K"));
});

Deno.test("Progress first update has no eta", () => {
  const output = new RecordingOutput(true);
  const progress = new Progress({ output, now: manualClock().now });

  progress.update(1, 10, "loss 5.5");

  assert.equal(output.text, "\rstep 1/10   10%  loss 5.5\x1b[K");
});

Deno.test("Progress non-terminal writes nothing", () => {
  const output = new RecordingOutput(false);
  const progress = new Progress({ output, now: manualClock().now });

  progress.update(1, 10, "loss 5.5");
  progress.done();

  assert.equal(output.text, "");
});

Deno.test("Progress throttles redraws", () => {
  const output = new RecordingOutput(true);
  const clock = manualClock();
  const progress = new Progress({ output, now: clock.now, minIntervalMs: 100 });

  progress.update(1, 10);
  clock.ms = 50;
  progress.update(2, 10);

  assert.equal(output.text.split("\r").length - 1, 1);
});

Deno.test("Progress last step always draws", () => {
  const output = new RecordingOutput(true);
  const clock = manualClock();
  const progress = new Progress({ output, now: clock.now, minIntervalMs: 100 });

  progress.update(9, 10);
  clock.ms = 1;
  progress.update(10, 10);

  assert.ok(output.text.includes("step 10/10  100%"));
});

Deno.test("Progress done ends the line", () => {
  const output = new RecordingOutput(true);
  const progress = new Progress({ output, now: manualClock().now });

  progress.update(10, 10);
  progress.done();

  assert.ok(output.text.endsWith("\n"));
});

Deno.test("Progress done without update writes nothing", () => {
  const output = new RecordingOutput(true);
  new Progress({ output }).done();

  assert.equal(output.text, "");
});

Deno.test("Progress clear erases the line", () => {
  const output = new RecordingOutput(true);
  const progress = new Progress({ output, now: manualClock().now });

  progress.update(1, 10);
  progress.clear();

  assert.ok(output.text.endsWith("\r\x1b[K"));
});

Deno.test("formatDuration seconds minutes hours", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(45_000), "45s");
  assert.equal(formatDuration(192_000), "3m12s");
  assert.equal(formatDuration(3_900_000), "1h05m");
});

Deno.test("formatDuration negative is zero", () => {
  assert.equal(formatDuration(-5_000), "0s");
});
