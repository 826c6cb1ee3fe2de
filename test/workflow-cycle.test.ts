import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import {
  type CycleDeps,
  type CycleOptions,
  Interrupts,
  STATE_PATH,
  formatDuration,
  lineSplitter,
  parseState,
  pulumiSignal,
  runCycle,
  runDirName,
} from "../scripts/workflow-cycle";
import { parseCliArgs, passphraseProblem, shellQuote, sshArgs, sshBox } from "../scripts/workflow";

const TARGET = "agent@agentbox-dev";
const OUTPUT = "/home/agent/.local/state/agentbox/workflow/output.jsonl";
const RUN_DIR = "workflow-runs/dev-20260101T120000Z";
const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
/** When the fake up returns (it takes 4 minutes), in the box's started= unit: the workflow starts then. */
const UP_RETURNED_S = T0 / 1000 + 4 * 60;

/** A state file as the box's unit writes it. */
function stateFile(state: string, extra: Record<string, string | number> = {}): string {
  const fields = { state, timeout_minutes: 60, output: OUTPUT, ...extra };
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${v}`)
    .join("\n")
    .concat("\n");
}

const ended = (state: string, exit: number) =>
  stateFile(state, { started: T0 / 1000 + 30, ended: T0 / 1000 + 30 + 754, exit });

interface FakeBox {
  config?: Record<string, string>;
  outputs?: Record<string, unknown>;
  /** readState's successive answers (an Error is an ssh failure); the last one repeats. */
  states?: Array<string | undefined | Error>;
  /** fetchFile's successive answers for the output file; the last one repeats. */
  fetches?: Array<string | Error>;
  upError?: Error;
  destroyError?: Error;
  upChunks?: string[];
  /** Called before each sleep: lets a test abort the cycle mid-wait. */
  onSleep?: (slept: number) => void;
  /** Called while up runs: lets a test interrupt it (an aborted up then rejects as Pulumi's cancelled update does). */
  onUp?: () => void;
  /** Called while destroy runs, with the same effect. */
  onDestroy?: (destroys: number) => void;
}

const WORKFLOW_CONFIG = { "agentbox:cloud": "hetzner", "agentbox:workflowPrompt": "Fix the failing tests" };
const OUTPUTS = { sshCommand: `ssh ${TARGET}`, sshTarget: TARGET, workflow: { timeoutMinutes: 60 } };

/** Fake deps on a fake clock: sleep advances now(), nothing really waits. Every call is recorded in order. */
function fakeBox(box: FakeBox = {}) {
  let clock = T0;
  let reads = 0;
  let fetches = 0;
  let slept = 0;
  const calls: string[] = [];
  const logs: string[] = [];
  const written: Record<string, string> = {};
  const destroyOptions: unknown[] = [];
  /** Whether each operation's signal had been aborted when it returned (Pulumi would have been told to cancel). */
  const aborted: string[] = [];
  let destroys = 0;
  const next = <T>(list: T[], i: number): T => list[Math.min(i, list.length - 1)]!;
  const deps: CycleDeps = {
    async config() {
      calls.push("config");
      return box.config ?? WORKFLOW_CONFIG;
    },
    async up(onOutput, signal) {
      calls.push("up");
      for (const chunk of box.upChunks ?? ["Updating (dev)\n", "+ agentbox created\n"]) onOutput(chunk);
      clock += 4 * 60_000;
      box.onUp?.();
      if (signal.aborted) {
        aborted.push("up");
        throw new Error("code: 255\n stderr: error: update canceled\n");
      }
      if (box.upError) throw box.upError;
    },
    async outputs() {
      calls.push("outputs");
      return box.outputs ?? OUTPUTS;
    },
    // only a finish asks (see test/workflow-finish.test.ts for those)
    async stackBox() {
      calls.push("stackBox");
      return { server: true, createdMs: T0 + 60_000 };
    },
    async readState(target) {
      const answer = next(box.states ?? [ended("success", 0)], reads++);
      calls.push(
        `read ${target} -> ${answer instanceof Error ? "ssh error" : answer === undefined ? "missing" : parseState(answer).state}`,
      );
      if (answer instanceof Error) throw answer;
      return answer;
    },
    async fetchFile(target, path) {
      const answer = next(box.fetches ?? ['{"type":"result","is_error":false}\n'], fetches++);
      calls.push(`fetch ${target} ${path}${answer instanceof Error ? " -> error" : ""}`);
      if (answer instanceof Error) throw answer;
      return answer;
    },
    async writeLocal(path, text) {
      calls.push(`write ${path}`);
      written[path] = text;
    },
    async destroy(options) {
      calls.push("destroy");
      destroyOptions.push({ excludeProtected: options.excludeProtected });
      box.onDestroy?.(++destroys);
      if (options.signal.aborted) {
        aborted.push("destroy");
        throw new Error("code: 255\n stderr: error: destroy canceled\n");
      }
      options.onOutput("Destroying (dev)\n- agentbox deleted");
      if (box.destroyError) throw box.destroyError;
    },
    async sleep(ms) {
      slept++;
      box.onSleep?.(slept);
      clock += ms;
    },
    now: () => clock,
    log: (line) => logs.push(line),
  };
  return {
    deps,
    calls,
    logs,
    written,
    destroyOptions,
    aborted,
    elapsedMs: () => clock - T0,
    /** The calls with consecutive repeats folded into one entry marked with a count. */
    folded: () =>
      calls.reduce<string[]>((acc, call) => {
        const last = acc[acc.length - 1];
        const m = last && /^(.*?)(?: x(\d+))?$/.exec(last);
        if (m && m[1] === call) acc[acc.length - 1] = `${call} x${Number(m[2] ?? 1) + 1}`;
        else acc.push(call);
        return acc;
      }, []),
  };
}

const options = (extra: Partial<CycleOptions> = {}): CycleOptions => ({ stack: "dev", runDir: RUN_DIR, ...extra });
const DESTROY_COMMAND = "npm run pulumi -- destroy --exclude-protected --stack dev";

describe("parseState", () => {
  test.each<[string, string, Record<string, string>]>([
    [
      "a whole file",
      ended("success", 0),
      {
        state: "success",
        timeout_minutes: "60",
        output: OUTPUT,
        started: "1767268830",
        ended: "1767269584",
        exit: "0",
      },
    ],
    ["empty", "", {}],
    [
      "values taken literally: quotes, spaces, = signs",
      "state='running'\noutput= /a b=c \n",
      { state: "'running'", output: " /a b=c " },
    ],
    [
      "junk, comments, blank lines and bad keys ignored",
      "# comment\n\nnot a pair\n=x\n1a=b\nkey with space=v\nstate=running\n",
      { state: "running" },
    ],
    ["CRLF line ends", "state=failure\r\nexit=1\r\n", { state: "failure", exit: "1" }],
    ["a later key wins", "state=running\nstate=success\n", { state: "success" }],
    ["empty value", "state=\n", { state: "" }],
    ["no trailing newline", "state=timeout", { state: "timeout" }],
  ])("%s", (_, text, fields) => {
    expect(parseState(text)).toEqual(fields);
  });

  test("__proto__ is an ordinary key, not the object's prototype", () => {
    const fields = parseState("__proto__=x\nstate=running\n");
    expect(Object.getPrototypeOf(fields)).toBe(Object.prototype);
    expect(Object.keys(fields)).toEqual(["__proto__", "state"]);
  });
});

describe("runCycle", () => {
  test("success: up, polls through missing/pending/running to success, fetches the output, then destroys keeping protected resources", async () => {
    const box = fakeBox({
      states: [
        undefined,
        stateFile("pending"),
        stateFile("running", { started: UP_RETURNED_S }),
        stateFile("running", { started: UP_RETURNED_S }),
        ended("success", 0),
      ],
    });
    const result = await runCycle(box.deps, options());
    expect(box.calls).toEqual([
      "config",
      "up",
      "outputs",
      `read ${TARGET} -> missing`,
      `read ${TARGET} -> pending`,
      `read ${TARGET} -> running`,
      `read ${TARGET} -> running`,
      `read ${TARGET} -> success`,
      `write ${RUN_DIR}/state`,
      `fetch ${TARGET} ${OUTPUT}`,
      `write ${RUN_DIR}/output.jsonl`,
      "destroy",
    ]);
    expect(box.destroyOptions).toEqual([{ excludeProtected: true }]);
    expect(result.outcome).toBe("success");
    expect(result.exitCode).toBe(0);
    expect(result.summary).toBe(
      `workflow dev: success - claude exit 0, ran 12m34s; output in ${RUN_DIR}/output.jsonl; box destroyed (volume kept)`,
    );
    expect(box.logs.at(-1)).toBe(result.summary);
    expect(box.written[`${RUN_DIR}/state`]).toBe(ended("success", 0));
    expect(box.written[`${RUN_DIR}/output.jsonl`]).toBe('{"type":"result","is_error":false}\n');
    // progress: one line per state change, Pulumi's output streamed line by line with a prefix
    expect(box.logs.filter((l) => l.startsWith("workflow dev: state "))).toEqual([
      "workflow dev: state pending (0s since up returned)",
      "workflow dev: state running (30s since up returned)",
      "workflow dev: state success (1m00s since up returned)",
    ]);
    expect(box.logs).toContain("  up | + agentbox created");
    expect(box.logs).toContain("  destroy | - agentbox deleted");
  });

  test("failure: exit 1, the output is still fetched and the box still destroyed", async () => {
    const box = fakeBox({ states: [stateFile("running"), ended("failure", 1)] });
    const result = await runCycle(box.deps, options());
    expect(box.calls.slice(-4)).toEqual([
      `write ${RUN_DIR}/state`,
      `fetch ${TARGET} ${OUTPUT}`,
      `write ${RUN_DIR}/output.jsonl`,
      "destroy",
    ]);
    expect(result.exitCode).toBe(1);
    expect(result.summary).toBe(
      `workflow dev: failure - claude exit 1, ran 12m34s; output in ${RUN_DIR}/output.jsonl; box destroyed (volume kept)`,
    );
  });

  test("the box's own timeout verdict: exit 2, output fetched, box destroyed", async () => {
    const box = fakeBox({ states: [stateFile("running"), ended("timeout", 124)] });
    const result = await runCycle(box.deps, options());
    expect(box.calls.slice(-3)).toEqual([`fetch ${TARGET} ${OUTPUT}`, `write ${RUN_DIR}/output.jsonl`, "destroy"]);
    expect(result.outcome).toBe("timeout");
    expect(result.exitCode).toBe(2);
  });

  test("the local safety bound: state stays running past timeout + margin → exit 2, never success, box destroyed", async () => {
    const box = fakeBox({
      outputs: { ...OUTPUTS, workflow: { timeoutMinutes: 5 } },
      states: [stateFile("running", { started: UP_RETURNED_S })],
    });
    const result = await runCycle(box.deps, options({ marginMinutes: 2 }));
    expect(result.outcome).toBe("timeout");
    expect(result.exitCode).toBe(2);
    expect(result.summary).toBe(
      `workflow dev: timeout - no end state from the box within 7m (box timeout 5m + 2m margin), last state running; partial output in ${RUN_DIR}/output.jsonl; box destroyed (volume kept)`,
    );
    // waited the whole bound (from when up returned), not a poll longer
    expect(box.elapsedMs() - 4 * 60_000).toBe(7 * 60_000);
    expect(box.folded()).toEqual([
      "config",
      "up",
      "outputs",
      `read ${TARGET} -> running x${box.calls.filter((c) => c.startsWith("read")).length}`,
      `write ${RUN_DIR}/state`,
      `fetch ${TARGET} ${OUTPUT}`,
      `write ${RUN_DIR}/output.jsonl`,
      "destroy",
    ]);
    expect(box.logs.join("\n")).not.toMatch(/success|idle|finished/);
    // a heartbeat each minute of the wait
    expect(box.logs.filter((l) => l.startsWith("workflow dev: still running")).length).toBe(6);
  });

  test("running for a long time with an unchanging output is not taken for finished", async () => {
    // 55 minutes of identical "running" reads (the agent quiet), then the box says success
    const running = stateFile("running", { started: UP_RETURNED_S });
    const polls = (55 * 60) / 15;
    const box = fakeBox({ states: [...Array<string>(polls).fill(running), ended("success", 0)] });
    const result = await runCycle(box.deps, options());
    expect(result.exitCode).toBe(0);
    expect(box.folded()).toEqual([
      "config",
      "up",
      "outputs",
      `read ${TARGET} -> running x${polls}`,
      `read ${TARGET} -> success`,
      `write ${RUN_DIR}/state`,
      `fetch ${TARGET} ${OUTPUT}`,
      `write ${RUN_DIR}/output.jsonl`,
      "destroy",
    ]);
    expect(box.logs).toContain("workflow dev: still running, 1m00s elapsed (box timeout 60m)");
    expect(box.logs).toContain("workflow dev: still running, 54m00s elapsed (box timeout 60m)");
  });

  test("an unknown state is waited out like running, never taken for an end", async () => {
    const box = fakeBox({ states: [stateFile("stopping"), stateFile("done"), ended("success", 0)] });
    const result = await runCycle(box.deps, options());
    expect(result.exitCode).toBe(0);
    expect(box.calls.filter((c) => c.startsWith("read"))).toHaveLength(3);
  });

  const sshDown = new Error(
    "reading state: ssh exited 255: ssh: connect to host agentbox-dev port 22: Connection refused",
  );

  test("failed ssh reads are never fatal before the deadline: 30 in a row (7m30s) are waited out, logged once a minute", async () => {
    const box = fakeBox({
      states: [stateFile("running"), ...Array<Error>(30).fill(sshDown), stateFile("running"), ended("success", 0)],
    });
    const result = await runCycle(box.deps, options());
    expect(result.exitCode).toBe(0);
    const failed = box.logs.filter((l) => l.includes(" failed ("));
    expect(failed[0]).toBe(
      `workflow dev: ssh to ${TARGET} failed (1 in a row; trying until the deadline, 1h09m45s from now): reading state: ssh exited 255: ssh: connect to host agentbox-dev port 22: Connection refused`,
    );
    expect(failed.map((l) => /\((\d+) in a row/.exec(l)?.[1])).toEqual(["1", "5", "9", "13", "17", "21", "25", "29"]);
    expect(box.logs).toContain(`workflow dev: ssh to ${TARGET} works again, after 30 failed reads`);
  });

  test("ssh failing at the deadline: exit 4 only then, nothing fetched, the box still destroyed, and where the output stays", async () => {
    const box = fakeBox({
      outputs: { ...OUTPUTS, volumeId: "104", workflow: { timeoutMinutes: 5 } },
      states: [stateFile("running", { run: "20260101T120400Z" }), new Error("ssh exited 255: Connection timed out")],
    });
    const result = await runCycle(box.deps, options({ marginMinutes: 2 }));
    const reads = box.calls.filter((c) => c.startsWith("read")).length;
    const runDir = "workflow-runs/dev-20260101T120400Z";
    expect(box.folded()).toEqual([
      "config",
      "up",
      "outputs",
      `read ${TARGET} -> running`,
      `read ${TARGET} -> ssh error x${reads - 1}`,
      `write ${runDir}/state`,
      "destroy",
    ]);
    // polled every 15 s up to the deadline, 7 minutes after up returned, and not a poll longer
    expect(reads).toBe((7 * 60) / 15 + 1);
    expect(box.elapsedMs() - 4 * 60_000).toBe(7 * 60_000);
    expect(result.exitCode).toBe(4);
    expect(result.summary).toBe(
      "workflow dev: unreachable - no end state from the box within 7m (box timeout 5m + 2m margin), and ssh to it was failing at the deadline (28 reads in a row over 6m45s: ssh exited 255: Connection timed out), last state running; box destroyed (volume kept); its output was not fetched: it stays on the volume, in the agent's home: ~/agentbox-runs/20260101T120400Z/",
    );
    expect(box.logs).toContain(
      "workflow dev: the output stays on the volume, in the agent's home: ~/agentbox-runs/20260101T120400Z/output.jsonl. To get it, bring a box back on the volume with npm run up -- --stack dev (a new box runs the workflow again: remove agentbox:workflowPrompt or workflowPromptFile first if you only want the output), then scp agent@<box>:agentbox-runs/20260101T120400Z/output.jsonl . ; or attach the volume to a server of your own in the cloud console",
    );
  });

  test("an unreachable box without a volume: its output went with it, and the line says so", async () => {
    const box = fakeBox({
      outputs: { ...OUTPUTS, workflow: { timeoutMinutes: 5 } },
      states: [stateFile("running"), new Error("ssh exited 255: Connection timed out")],
    });
    const result = await runCycle(box.deps, options({ marginMinutes: 2 }));
    expect(result.exitCode).toBe(4);
    expect(result.summary).toMatch(
      /; box destroyed \(volume kept\); its output was not fetched and went with the box \(the stack has no volume\)$/,
    );
  });

  test("agentbox:waitForReady false: the deadline adds the readiness timeout, and a box unreachable for its first 20 minutes is waited for", async () => {
    const box = fakeBox({
      config: { ...WORKFLOW_CONFIG, "agentbox:waitForReady": "false" },
      states: [...Array<Error>(80).fill(sshDown), stateFile("running"), ended("success", 0)],
    });
    const result = await runCycle(box.deps, options());
    expect(result.exitCode).toBe(0);
    expect(box.logs).toContain(
      `workflow dev: waiting for the workflow on ${TARGET}, polling every 15s, for at most 85m (box timeout 60m + 10m margin + 15m for the box to come up (agentbox:waitForReady is false))`,
    );
  });

  test.each([
    [{}, "for at most 70m (box timeout 60m + 10m margin)"],
    [{ "agentbox:waitForReady": "true" }, "for at most 70m (box timeout 60m + 10m margin)"],
    [
      { "agentbox:waitForReady": "false", "agentbox:readyTimeoutMinutes": "25" },
      "for at most 95m (box timeout 60m + 10m margin + 25m for the box to come up (agentbox:waitForReady is false))",
    ],
  ])("the deadline for config %j: %s", async (config, bound) => {
    const box = fakeBox({ config: { ...WORKFLOW_CONFIG, ...config } });
    await runCycle(box.deps, options());
    expect(box.logs.find((l) => l.includes("waiting for the workflow"))).toContain(bound);
  });

  test("up failing: no destroy, the command to destroy later is printed", async () => {
    const box = fakeBox({
      upError: new Error("code: 255\n stdout: Updating (dev)\n stderr: error: hcloud: server limit exceeded\n"),
    });
    const result = await runCycle(box.deps, options());
    expect(box.calls).toEqual(["config", "up"]);
    expect(result.exitCode).toBe(3);
    expect(result.summary).toBe(
      `workflow dev: cycle error - pulumi up failed: error: hcloud: server limit exceeded; whatever it created is left for you to look at. Destroy it with: ${DESTROY_COMMAND}`,
    );
    expect(box.logs).toContain("  up |  stderr: error: hcloud: server limit exceeded");
  });

  test("up failing with destroyOnFailure: destroyed, still exit 3", async () => {
    const box = fakeBox({ upError: new Error("error: the box did not become ready within 15 minutes") });
    const result = await runCycle(box.deps, options({ destroyOnFailure: true }));
    expect(box.calls).toEqual(["config", "up", "destroy"]);
    expect(box.destroyOptions).toEqual([{ excludeProtected: true }]);
    expect(result.exitCode).toBe(3);
    expect(result.summary).toBe(
      "workflow dev: cycle error - pulumi up failed: error: the box did not become ready within 15 minutes; destroyed what it had created (volume kept)",
    );
  });

  test("--keep: no destroy, the command is printed, the exit code is the workflow's", async () => {
    const box = fakeBox({ states: [ended("failure", 1)] });
    const result = await runCycle(box.deps, options({ keep: true }));
    expect(box.calls).not.toContain("destroy");
    expect(result.exitCode).toBe(1);
    expect(result.summary).toBe(
      `workflow dev: failure - claude exit 1, ran 12m34s; output in ${RUN_DIR}/output.jsonl; box kept (--keep). Destroy it with: ${DESTROY_COMMAND}`,
    );
  });

  test.each([
    ["no prompt at all", { "agentbox:cloud": "hetzner" }],
    ["an empty prompt", { "agentbox:workflowPrompt": "  " }],
  ])("no workflow configured (%s): refused before up, nothing created", async (_, config) => {
    const box = fakeBox({ config });
    const result = await runCycle(box.deps, options());
    expect(box.calls).toEqual(["config"]);
    expect(result.exitCode).toBe(3);
    expect(result.summary).toBe(
      'workflow dev: cycle error - agentbox:workflowPrompt is not set for stack dev, so it has no workflow to run. Fix: pulumi config set agentbox:workflowPrompt "Fix the failing tests and commit" --stack dev (or pulumi config set agentbox:workflowPromptFile prompts/task.md --stack dev) (nothing was created)',
    );
  });

  test("a prompt file counts as a workflow", async () => {
    const box = fakeBox({ config: { "agentbox:workflowPromptFile": "prompts/nightly.md" } });
    expect((await runCycle(box.deps, options())).exitCode).toBe(0);
  });

  test("no workflow output after up (program out of date): exit 3, box destroyed", async () => {
    const box = fakeBox({ outputs: { sshCommand: `ssh ${TARGET}` } });
    const result = await runCycle(box.deps, options());
    expect(box.calls).toEqual(["config", "up", "outputs", "destroy"]);
    expect(result.exitCode).toBe(3);
    expect(result.summary).toMatch(/^workflow dev: cycle error - stack dev has no workflow output/);
  });

  test.each([
    ["sshTarget", { sshTarget: "agent@100.64.0.7", sshCommand: "ssh agent@elsewhere" }, "agent@100.64.0.7"],
    ["sshCommand when there is no sshTarget", { sshCommand: "ssh agent@203.0.113.10" }, "agent@203.0.113.10"],
  ])("reaches the box through %s", async (_, outputs, target) => {
    const box = fakeBox({ outputs: { ...outputs, workflow: { timeoutMinutes: 60 } } });
    await runCycle(box.deps, options());
    expect(box.calls).toContain(`read ${target} -> success`);
  });

  test.each(["-oProxyCommand=evil@x", "agent@host extra", "host-without-user"])(
    "an sshTarget ssh could misread (%s) is refused",
    async (sshTarget) => {
      const box = fakeBox({ outputs: { sshTarget, workflow: { timeoutMinutes: 60 } } });
      const result = await runCycle(box.deps, options());
      expect(box.calls.filter((c) => c.startsWith("read"))).toEqual([]);
      expect(result.summary).toContain("has no usable sshTarget output (user@address)");
      expect(box.calls.at(-1)).toBe("destroy");
    },
  );

  test("output that cannot be fetched after success: exit 3 after retries, box destroyed", async () => {
    const box = fakeBox({
      states: [ended("success", 0)],
      fetches: [new Error("ssh exited 1: cat: Permission denied")],
    });
    const result = await runCycle(box.deps, options());
    expect(box.folded()).toEqual([
      "config",
      "up",
      "outputs",
      `read ${TARGET} -> success`,
      `write ${RUN_DIR}/state`,
      `fetch ${TARGET} ${OUTPUT} -> error x3`,
      "destroy",
    ]);
    expect(result.exitCode).toBe(3);
    expect(result.summary).toBe(
      "workflow dev: cycle error - the workflow ended (success, claude exit 0, ran 12m34s) but its output could not be fetched: ssh exited 1: cat: Permission denied; box destroyed (volume kept)",
    );
  });

  test("a transient fetch failure is retried", async () => {
    const box = fakeBox({ fetches: [new Error("ssh exited 255"), "{}\n"] });
    expect((await runCycle(box.deps, options())).exitCode).toBe(0);
  });

  test("a state file without an output path: exit 3, box destroyed", async () => {
    const box = fakeBox({ states: ["state=success\nexit=0\n"] });
    const result = await runCycle(box.deps, options());
    expect(box.calls.some((c) => c.startsWith("fetch"))).toBe(false);
    expect(result.summary).toContain("the state file names no absolute output path (output=)");
    expect(result.exitCode).toBe(3);
  });

  test("destroy failing turns any result into exit 3 with the command to finish it", async () => {
    const box = fakeBox({ destroyError: new Error("error: hcloud: timeout") });
    const result = await runCycle(box.deps, options());
    expect(result.exitCode).toBe(3);
    expect(result.summary).toBe(
      `workflow dev: cycle error - success (claude exit 0, ran 12m34s; output in ${RUN_DIR}/output.jsonl), but destroy failed (error: hcloud: timeout) and the box is still running. Run: ${DESTROY_COMMAND}`,
    );
  });

  test("the poll interval is the option's", async () => {
    const box = fakeBox({ states: [stateFile("running"), stateFile("running"), ended("success", 0)] });
    await runCycle(box.deps, options({ pollSeconds: 42 }));
    expect(box.elapsedMs()).toBe(4 * 60_000 + 2 * 42_000);
  });
});

describe("interrupts (Ctrl-C, SIGTERM): the cycle cancels, destroys what it created, and says what is left", () => {
  const LEFT = `stack dev may still have its box. Destroy it with: ${DESTROY_COMMAND}`;

  test("during the wait: no more reads, the box destroyed, exit 130", async () => {
    const interrupts = new Interrupts();
    const box = fakeBox({ states: [stateFile("running")], onSleep: (n) => void (n === 3 && interrupts.interrupt()) });
    const result = await runCycle(box.deps, options({ interrupts }));
    expect(box.folded()).toEqual([
      "config",
      "up",
      "outputs",
      `read ${TARGET} -> running x3`,
      `write ${RUN_DIR}/state`,
      "destroy",
    ]);
    expect(box.destroyOptions).toEqual([{ excludeProtected: true }]);
    expect(box.aborted).toEqual([]);
    expect(result.exitCode).toBe(130);
    expect(result.summary).toBe(
      "workflow dev: interrupted - interrupted while the workflow was running; box destroyed (volume kept)",
    );
    expect(box.logs).toContain("workflow dev: destroying the box (the volume stays); Ctrl-C again cancels the destroy");
  });

  test("during up: Pulumi is told to cancel the update, and the box is destroyed without --destroy-on-failure", async () => {
    const interrupts = new Interrupts();
    const box = fakeBox({ onUp: () => interrupts.interrupt() });
    const result = await runCycle(box.deps, options({ interrupts }));
    expect(box.calls).toEqual(["config", "up", "destroy"]);
    expect(box.aborted).toEqual(["up"]);
    expect(box.destroyOptions).toEqual([{ excludeProtected: true }]);
    expect(result.exitCode).toBe(130);
    expect(result.summary).toBe(
      "workflow dev: interrupted - interrupted during pulumi up; box destroyed (volume kept)",
    );
    expect(box.logs).toContain("  up |  stderr: error: update canceled");
  });

  test("an up that finished as the interrupt came: the box is destroyed all the same", async () => {
    const interrupts = new Interrupts();
    const box = fakeBox();
    box.deps.up = async () => void interrupts.interrupt();
    const result = await runCycle(box.deps, options({ interrupts }));
    expect(box.calls).toEqual(["config", "destroy"]);
    expect(result.exitCode).toBe(130);
  });

  test("a second interrupt, during that destroy: Pulumi is told to cancel it, and the cycle says what is left", async () => {
    const interrupts = new Interrupts();
    const box = fakeBox({ onUp: () => interrupts.interrupt(), onDestroy: () => interrupts.interrupt() });
    const result = await runCycle(box.deps, options({ interrupts }));
    expect(box.calls).toEqual(["config", "up", "destroy"]);
    expect(box.aborted).toEqual(["up", "destroy"]);
    expect(result.exitCode).toBe(130);
    expect(result.summary).toBe(
      `workflow dev: interrupted - interrupted during pulumi up, but the destroy was interrupted: ${LEFT}`,
    );
  });

  test("an interrupt during the destroy that ends a finished workflow cancels it too", async () => {
    const interrupts = new Interrupts();
    const box = fakeBox({ onDestroy: () => interrupts.interrupt() });
    const result = await runCycle(box.deps, options({ interrupts }));
    expect(box.aborted).toEqual(["destroy"]);
    expect(result.exitCode).toBe(130);
    expect(result.summary).toBe(
      `workflow dev: interrupted - success (claude exit 0, ran 12m34s; output in ${RUN_DIR}/output.jsonl), but the destroy was interrupted: ${LEFT}`,
    );
  });

  test("--keep: an interrupt during up leaves the box, and says how to destroy it", async () => {
    const interrupts = new Interrupts();
    const box = fakeBox({ onUp: () => interrupts.interrupt() });
    const result = await runCycle(box.deps, options({ interrupts, keep: true }));
    expect(box.calls).toEqual(["config", "up"]);
    expect(result.summary).toBe(
      `workflow dev: interrupted - interrupted during pulumi up; box kept (--keep). Destroy it with: ${DESTROY_COMMAND}`,
    );
  });

  test("before up: nothing is created", async () => {
    const interrupts = new Interrupts();
    const box = fakeBox();
    const config = box.deps.config;
    box.deps.config = async () => {
      interrupts.interrupt();
      return config();
    };
    const result = await runCycle(box.deps, options({ interrupts }));
    expect(box.calls).toEqual(["config"]);
    expect(result.exitCode).toBe(130);
    expect(result.summary).toBe("workflow dev: interrupted - interrupted before anything was created");
  });

  test("Interrupts: `first` aborts at the first interrupt, each next() signal at the next one after it was asked for", () => {
    const interrupts = new Interrupts();
    const early = interrupts.next();
    expect(interrupts.interrupt({ signal: "SIGTERM", reachedPulumi: false })).toBe(1);
    expect(interrupts.first.aborted).toBe(true);
    expect(early.aborted).toBe(true);
    const later = interrupts.next();
    expect(later.aborted).toBe(false);
    expect(interrupts.interrupt()).toBe(2);
    expect(later.aborted).toBe(true);
    expect(interrupts.first.reason).toEqual({ signal: "SIGTERM", reachedPulumi: false });
  });

  test.each([
    [{ signal: "SIGINT", reachedPulumi: false }, true],
    [{ signal: "SIGTERM", reachedPulumi: false }, true],
    // a Ctrl-C in the terminal has reached Pulumi already: a SIGINT more would be its second ("terminate now")
    [{ signal: "SIGINT", reachedPulumi: true }, false],
  ])("pulumiSignal passes on the interrupt %j: %s", (reason, passed) => {
    const interrupts = new Interrupts();
    const before = pulumiSignal(interrupts.first);
    interrupts.interrupt(reason);
    expect(before.aborted).toBe(passed);
    expect(pulumiSignal(interrupts.first).aborted).toBe(passed);
  });
});

describe("helpers", () => {
  test("lineSplitter joins chunks split mid-line and hands over the unterminated rest on flush", () => {
    const lines: string[] = [];
    const s = lineSplitter((l) => lines.push(l));
    s.push("Upda");
    s.push("ting (dev)\r\n+ serv");
    s.push("er created\n\n");
    s.push("Outputs:");
    expect(lines).toEqual(["Updating (dev)", "+ server created", ""]);
    s.flush();
    expect(lines).toEqual(["Updating (dev)", "+ server created", "", "Outputs:"]);
  });

  test.each([
    ["dev", "dev-20260101T120000Z"],
    ["acme/agentbox/nightly", "acme_agentbox_nightly-20260101T120000Z"],
  ])("runDirName(%s)", (stack, name) => {
    expect(runDirName(stack, T0 + 123)).toBe(name);
  });

  test.each([
    [0, "0s"],
    [59_400, "59s"],
    [60_000, "1m00s"],
    [754_000, "12m34s"],
    [3_723_000, "1h02m03s"],
  ])("formatDuration(%d) = %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });
});

describe("the CLI", () => {
  test("--help prints the usage and exits 0", () => {
    const r = spawnSync("npx", ["tsx", "scripts/workflow.ts", "--help"], { encoding: "utf8", timeout: 20_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: npm run workflow -- --stack <name>/);
    expect(r.stdout).toContain("--poll-seconds");
    expect(r.stdout).toContain("--detach");
    expect(r.stdout).toContain("--finish");
  });

  test.each<[string[], unknown]>([
    [
      ["--stack", "dev"],
      { help: false, stack: "dev", mode: "foreground", pollSeconds: 15, keep: false, destroyOnFailure: false },
    ],
    [
      ["-s", "dev", "--poll-seconds", "5", "--keep", "--destroy-on-failure"],
      { help: false, stack: "dev", mode: "foreground", pollSeconds: 5, keep: true, destroyOnFailure: true },
    ],
    [
      ["--stack=acme/agentbox/dev"],
      {
        help: false,
        stack: "acme/agentbox/dev",
        mode: "foreground",
        pollSeconds: 15,
        keep: false,
        destroyOnFailure: false,
      },
    ],
    [
      ["--stack", "dev", "--detach", "--destroy-on-failure"],
      { help: false, stack: "dev", mode: "detach", pollSeconds: 15, keep: false, destroyOnFailure: true },
    ],
    [
      ["--stack", "dev", "--finish", "--poll-seconds", "5"],
      { help: false, stack: "dev", mode: "finish", pollSeconds: 5, keep: false, destroyOnFailure: false },
    ],
    [["--help"], { help: true }],
  ])("parseCliArgs(%j)", (argv, args) => {
    expect(parseCliArgs(argv)).toEqual(args);
  });

  test.each([
    [[], "--stack <name> is required"],
    [["--stack", "dev", "--poll-seconds", "0"], "--poll-seconds 0: a whole number of seconds from 1 to 600"],
    [["--stack", "dev", "--poll-seconds", "1.5"], "--poll-seconds 1.5: a whole number of seconds from 1 to 600"],
    [["--stack=-x"], "--stack -x: not a stack name"],
    [["--stack", "dev", "now"], "unexpected argument now"],
    [
      ["--stack", "dev", "--detach", "--finish"],
      "--detach and --finish together: --detach starts a workflow, --finish ends it; give one",
    ],
    [
      ["--stack", "dev", "--detach", "--keep"],
      "--keep with --detach: a detached box runs until a --finish destroys it; leave --keep out",
    ],
    [
      ["--stack", "dev", "--finish", "--keep"],
      "--keep with --finish: a finish is there to destroy the box; to keep it, run no finish",
    ],
    [
      ["--stack", "dev", "--finish", "--destroy-on-failure"],
      "--destroy-on-failure with --finish: a finish runs no up; leave it out",
    ],
  ])("parseCliArgs(%j) refuses: %s", (argv, message) => {
    expect(() => parseCliArgs(argv)).toThrow(message);
  });

  test.each<[string, NodeJS.ProcessEnv, boolean]>([
    ["an empty PULUMI_CONFIG_PASSPHRASE (a valid passphrase for the CLI)", { PULUMI_CONFIG_PASSPHRASE: "" }, true],
    ["a PULUMI_CONFIG_PASSPHRASE", { PULUMI_CONFIG_PASSPHRASE: "s3cret" }, true],
    ["a PULUMI_CONFIG_PASSPHRASE_FILE", { PULUMI_CONFIG_PASSPHRASE_FILE: "/run/secrets/passphrase" }, true],
    ["neither", {}, false],
    ["an empty PULUMI_CONFIG_PASSPHRASE_FILE alone", { PULUMI_CONFIG_PASSPHRASE_FILE: "" }, false],
  ])("a passphrase stack opens with %s: %s", (_, env, opens) => {
    expect(passphraseProblem("dev", env, true)).toBe(
      opens
        ? undefined
        : "stack dev encrypts its secrets with a passphrase and the workflow cannot prompt for it. Fix: read -rs PULUMI_CONFIG_PASSPHRASE && export PULUMI_CONFIG_PASSPHRASE (or set PULUMI_CONFIG_PASSPHRASE_FILE)",
    );
    // a stack whose secrets the backend encrypts needs none
    expect(passphraseProblem("dev", env, false)).toBeUndefined();
  });

  test("ssh never prompts, trusts the new box's host key into the run's own known_hosts, and ends options before the target", () => {
    expect(sshArgs(TARGET, "/tmp/run/known_hosts", `cat ${STATE_PATH}`)).toEqual([
      ...["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"],
      ...["-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile=/tmp/run/known_hosts"],
      ...["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"],
      "--",
      TARGET,
      "cat /var/lib/agentbox/workflow/state",
    ]);
  });

  test.each([
    ["/plain/path", "'/plain/path'"],
    ["/it's $(here)", `'/it'\\''s $(here)'`],
  ])("shellQuote(%s)", (text, quoted) => {
    expect(shellQuote(text)).toBe(quoted);
  });
});

describe("ssh wiring, against a fake ssh that runs the remote command locally", () => {
  const savedPath = process.env.PATH;
  afterEach(() => {
    process.env.PATH = savedPath;
  });

  function fakeSsh(): string {
    const dir = mkdtempSync(join(tmpdir(), "agentbox-fake-ssh-"));
    // the last argument is the remote command; the one before it the target ("down@..." plays an unreachable box)
    writeFileSync(
      join(dir, "ssh"),
      [
        "#!/bin/sh",
        "for a; do target=$cmd; cmd=$a; done",
        'case $target in down@*) echo "ssh: connect to host box port 22: Connection refused" >&2; exit 255;; esac',
        'exec sh -c "$cmd"',
        "",
      ].join("\n"),
    );
    chmodSync(join(dir, "ssh"), 0o755);
    process.env.PATH = `${dir}:${savedPath}`;
    return dir;
  }

  test("a state file that does not exist yet reads as undefined (pending), not as an ssh failure", async () => {
    const dir = fakeSsh();
    await expect(sshBox(join(dir, "known_hosts")).readState(TARGET)).resolves.toBeUndefined();
  });

  test("an unreachable box is an error naming ssh's complaint", async () => {
    const dir = fakeSsh();
    await expect(sshBox(join(dir, "known_hosts")).readState("down@box")).rejects.toThrow(
      `reading ${STATE_PATH}: ssh exited 255: ssh: connect to host box port 22: Connection refused`,
    );
  });

  test("fetchFile hands the remote shell the path quoted, whatever it contains", async () => {
    const dir = fakeSsh();
    const file = join(dir, "it's $(out).jsonl");
    writeFileSync(file, '{"a":1}\n');
    await expect(sshBox(join(dir, "known_hosts")).fetchFile(TARGET, file)).resolves.toBe('{"a":1}\n');
    await expect(sshBox(join(dir, "known_hosts")).fetchFile(TARGET, join(dir, "missing"))).rejects.toThrow(
      /ssh exited 1: cat: .*missing/,
    );
  });
});
