import assert from "node:assert/strict";
import {
  learningRate,
  lrFactor,
  muonMomentum,
  type ScheduleOptions,
} from "../../optim/schedule.ts";

const close = (actual: number, expected: number, message?: string) =>
  assert.ok(Math.abs(actual - expected) <= 1e-12, message ?? `${actual} is not ${expected}`);

Deno.test("lrFactor constant warm-up", () => {
  const options: ScheduleOptions = { name: "constant", warmupSteps: 4, minLrRatio: 0.1 };

  close(lrFactor(0, 100, options), 0.25);
  close(lrFactor(3, 100, options), 1);
  close(lrFactor(50, 100, options), 1);
});

Deno.test("lrFactor cosine keeps learningRate values", () => {
  const options: ScheduleOptions = { name: "cosine", warmupSteps: 2, minLrRatio: 0.1 };

  // Decay spans steps 2..9 of 10 (7 intervals), so the last step lands on the floor.
  close(lrFactor(0, 10, options), 0.5);
  close(lrFactor(1, 10, options), 1);
  close(lrFactor(2, 10, options), 1);
  close(lrFactor(5, 10, options), 0.1 + 0.45 * (1 + Math.cos((Math.PI * 3) / 7)));
  close(lrFactor(9, 10, options), 0.1);
  close(learningRate(3e-3, 5, 10, options), 3e-3 * lrFactor(5, 10, options));
});

Deno.test("lrFactor wsd linear cooldown", () => {
  const options: ScheduleOptions = {
    name: "wsd",
    warmupSteps: 0,
    minLrRatio: 0,
    decayFraction: 0.2,
    cooldown: "linear",
  };

  // 10 steps with a 20% cooldown: steps 8 and 9 decay, as η·(T − t)/D.
  close(lrFactor(0, 10, options), 1);
  close(lrFactor(7, 10, options), 1);
  close(lrFactor(8, 10, options), 1);
  close(lrFactor(9, 10, options), 0.5);
});

Deno.test("lrFactor wsd linear floor", () => {
  const options: ScheduleOptions = {
    name: "wsd",
    warmupSteps: 0,
    minLrRatio: 0.1,
    decayFraction: 0.5,
    cooldown: "linear",
  };

  // f + (1 − f)(T − t)/D with T = 10, D = 5, t = 8.
  close(lrFactor(8, 10, options), 0.1 + 0.9 * (2 / 5));
});

Deno.test("lrFactor wsd 1-sqrt cooldown", () => {
  const options: ScheduleOptions = {
    name: "wsd",
    warmupSteps: 2,
    minLrRatio: 0,
    decayFraction: 0.2,
  };

  close(lrFactor(0, 10, options), 0.5);
  close(lrFactor(5, 10, options), 1);
  close(lrFactor(8, 10, options), 1);
  close(lrFactor(9, 10, options), 1 - Math.sqrt(1 / 2));
});

Deno.test("lrFactor wsd zero decay fraction", () => {
  const options: ScheduleOptions = { name: "wsd", warmupSteps: 0, minLrRatio: 0, decayFraction: 0 };

  close(lrFactor(9, 10, options), 1);
});

Deno.test("lrFactor rejects invalid input", () => {
  const options: ScheduleOptions = { name: "cosine", warmupSteps: 2, minLrRatio: 0.1 };

  assert.throws(() => lrFactor(-1, 10, options), /step is -1/);
  assert.throws(() => lrFactor(0, 0, options), /totalSteps is 0/);
  assert.throws(() => lrFactor(0, 10, { ...options, minLrRatio: 2 }), /minLrRatio is 2/);
  assert.throws(
    () => lrFactor(0, 10, { ...options, name: "linear" as "cosine" }),
    /unknown name "linear"/,
  );
});

Deno.test("lrFactor resume mid warm-up", () => {
  const options: ScheduleOptions = { name: "cosine", warmupSteps: 10, minLrRatio: 0.1 };
  const uninterrupted = Array.from({ length: 6 }, (_, step) => lrFactor(step, 100, options));

  // Save after three updates (the step counter is 3), restore it from JSON, continue.
  const saved = JSON.parse(JSON.stringify({ step: 3 }));
  const resumed = [saved.step, saved.step + 1].map((step: number) => lrFactor(step, 100, options));

  assert.equal(resumed[0], uninterrupted[3]);
  assert.equal(resumed[1], uninterrupted[4]);
});

Deno.test("muonMomentum linear warm-up", () => {
  const warmup = { start: 0.85, end: 0.95, warmupSteps: 300 };

  close(muonMomentum(0, warmup), 0.85);
  close(muonMomentum(150, warmup), 0.9);
  close(muonMomentum(300, warmup), 0.95);
  close(muonMomentum(1000, warmup), 0.95);
  close(muonMomentum(5, { ...warmup, warmupSteps: 0 }), 0.95);
});
