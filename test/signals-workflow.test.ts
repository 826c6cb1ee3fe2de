import { afterEach, expect, test, vi } from "vitest";
import { feedInterrupts } from "../scripts/workflow";
import { Interrupts } from "../scripts/workflow-cycle";

// @ts-expect-error: a plain ES module without types
import { SAME_INTERRUPT_MS } from "../scripts/pulumi.mjs";

let stop: (() => void) | undefined;
afterEach(() => {
  stop?.();
  vi.useRealTimers();
});

test("workflow and bake feed each SIGINT and SIGTERM into the cycle's interrupts once, with the line to print", async () => {
  vi.useFakeTimers({ toFake: ["Date"] });
  const errors = vi.spyOn(console, "error").mockImplementation(() => undefined);
  const interrupts = new Interrupts();
  stop = await feedInterrupts(interrupts, (count) => `interrupt ${count}`);
  // a signal handler's event, as the process gets it
  process.emit("SIGTERM", "SIGTERM");
  // the same interrupt delivered again at once is one interrupt
  process.emit("SIGTERM", "SIGTERM");
  expect(interrupts.count).toBe(1);
  // SIGTERM never comes from the terminal: it must be passed on to Pulumi
  expect(interrupts.first.reason).toEqual({ signal: "SIGTERM", reachedPulumi: false });
  vi.advanceTimersByTime(SAME_INTERRUPT_MS + 1);
  process.emit("SIGINT", "SIGINT");
  expect(interrupts.count).toBe(2);
  expect(errors.mock.calls.map((c) => c[0])).toEqual([
    "agentbox: SIGTERM: interrupt 1",
    "agentbox: Ctrl-C: interrupt 2",
  ]);
  errors.mockRestore();
});
