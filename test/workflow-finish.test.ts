import * as automationErrors from "@pulumi/pulumi/automation/errors";
import { describe, expect, test } from "vitest";
import {
  type CycleDeps,
  type CycleOptions,
  EXIT_CODES,
  Interrupts,
  boxInState,
  isLockError,
  runCycle,
  runDetach,
  runDirName,
  runFinish,
} from "../scripts/workflow-cycle";
import { interruptLine } from "../scripts/workflow";

/**
 * The detached cycle's state machine against one fake world that several "processes" share, as a stack and its box
 * are shared by whoever runs the command: the stack's state (is there a server, when was it created, who holds the
 * lock) and the box (its state file, as a function of the time; whether ssh reaches it). Each process has its own
 * deps, logs and calls, and they all read one clock, which sleep advances and a test may jump (a laptop waking).
 */

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const MIN = 60_000;
const TARGET = "agent@agentbox-dev";
const WORKFLOW_CONFIG = { "agentbox:cloud": "hetzner", "agentbox:workflowPrompt": "Fix the failing tests" };
const OUTPUT_TEXT = '{"type":"result","is_error":false}\n';
const FINISH = "npm run workflow -- --stack dev --finish";

// the Automation API's own error for a stack someone else has locked, made from the CLI's words on a self-managed
// backend by the function the Automation API uses (internal: not in its types)
const { createCommandError } = automationErrors as unknown as {
  createCommandError(result: { stdout: string; stderr: string; code: number; toString(): string }): Error;
};
function lockError(): Error {
  const stderr =
    "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with `pulumi cancel`.\n" +
    "  s3://agentbox-state/.pulumi/locks/organization/agentbox/dev/6f1c.json: created by runner@ci (pid 2211) at 2026-01-01T12:00:00Z\n";
  return createCommandError({
    stdout: "",
    stderr,
    code: 255,
    toString: () => `code: 255\n stdout: \n stderr: ${stderr}\n err?: \n`,
  });
}

interface WorldOptions {
  timeoutMinutes?: number;
  /** How long the agent runs; past the timeout the box ends it as `timeout`. @default 42 */
  agentMinutes?: number;
  /** The box never writes an end state (its own timeout failed): only the deadline ends the wait. */
  stuck?: boolean;
  verdict?: { state: "success" | "failure"; exit: number };
  volume?: boolean;
  /** Whether the stack's state records the server's creation time (CLIs from before 2023 did not). */
  recordsCreation?: boolean;
  /** Windows of world time, [from, to) in ms since T0, when ssh to the box fails (this machine asleep or offline, or the box cut off). */
  sshDown?: Array<[number, number]>;
}

interface ProcessHooks {
  /** Called before each sleep; a promise returned stands for the sleep (one that never settles: the process was killed). */
  onSleep?: (n: number) => Promise<void> | void;
  /** Called while this process's destroy holds the stack's lock. */
  duringDestroy?: () => Promise<void>;
  interrupts?: Interrupts;
}

class World {
  clock = T0;
  server = false;
  createdMs?: number;
  startedMs?: number;
  /** Who holds the stack's lock: a process's name, or someone else's operation. */
  lockedBy?: string;
  /** Destroys that took the server down. */
  destroys = 0;
  constructor(readonly o: WorldOptions = {}) {}

  get timeoutMinutes() {
    return this.o.timeoutMinutes ?? 60;
  }

  /** The box's state file at the world's time, as cloud-init/files/workflow.sh writes it (with the agent= line). */
  stateFile(): string | undefined {
    if (this.startedMs === undefined || this.clock < this.startedMs) return undefined;
    const started = this.startedMs / 1000;
    const run = runDirName("x", this.startedMs).slice(2);
    const common = [
      `started=${started}`,
      `output=/home/agent/agentbox-runs/${run}/output.jsonl`,
      `run=${run}`,
      `timeout_minutes=${this.timeoutMinutes}`,
      "agent=claude",
    ];
    const minutes = Math.min(this.o.agentMinutes ?? 42, this.timeoutMinutes);
    const endMs = this.startedMs + minutes * MIN;
    if (this.o.stuck || this.clock < endMs) return ["state=running", ...common].join("\n") + "\n";
    const timedOut = (this.o.agentMinutes ?? 42) > this.timeoutMinutes;
    const verdict = timedOut ? { state: "timeout", exit: 124 } : (this.o.verdict ?? { state: "success", exit: 0 });
    return [`state=${verdict.state}`, ...common, `ended=${endMs / 1000}`, `exit=${verdict.exit}`].join("\n") + "\n";
  }

  sshFails(): Error | undefined {
    if (!this.server)
      return new Error("ssh exited 255: ssh: Could not resolve hostname agentbox-dev: Name or service not known");
    const at = this.clock - T0;
    if ((this.o.sshDown ?? []).some(([from, to]) => at >= from && at < to)) {
      return new Error("ssh exited 255: ssh: connect to host agentbox-dev port 22: Connection timed out");
    }
    return undefined;
  }

  process(name: string, hooks: ProcessHooks = {}) {
    return processIn(this, name, hooks);
  }
}

/** One process's deps on the shared world: its own calls, logs and files. */
function processIn(world: World, name: string, hooks: ProcessHooks) {
  const calls: string[] = [];
  const logs: string[] = [];
  const written: Record<string, string> = {};
  let sleeps = 0;
  const deps: CycleDeps = {
    async config() {
      calls.push("config");
      return WORKFLOW_CONFIG;
    },
    async up(onOutput) {
      calls.push("up");
      if (world.lockedBy) throw lockError();
      onOutput("Updating (dev)\n");
      world.clock += MIN;
      if (!world.server) {
        world.server = true;
        world.createdMs = world.clock;
        world.startedMs = undefined;
      }
      world.clock += 3 * MIN;
      // the box is ready when up returns, and starts its workflow at once
      world.startedMs ??= world.clock + 20_000;
    },
    async outputs() {
      calls.push("outputs");
      // as after a destroy that keeps protected resources: the stack's outputs stay, stale
      return {
        sshTarget: TARGET,
        workflow: { timeoutMinutes: world.timeoutMinutes },
        ...(world.o.volume === false ? {} : { volumeId: "104" }),
      };
    },
    async stackBox() {
      calls.push("stackBox");
      if (!world.server) return { server: false };
      return world.o.recordsCreation === false ? { server: true } : { server: true, createdMs: world.createdMs };
    },
    async readState(target) {
      const failed = world.sshFails();
      const text = failed ? undefined : world.stateFile();
      calls.push(`read -> ${failed ? "ssh error" : text === undefined ? "missing" : /state=(\w+)/.exec(text)![1]}`);
      if (failed) throw failed;
      expect(target).toBe(TARGET);
      return text;
    },
    async fetchFile(_, path) {
      const failed = world.sshFails();
      calls.push(`fetch${failed ? " -> ssh error" : ""}`);
      if (failed) throw failed;
      expect(path).toMatch(/^\/home\/agent\/agentbox-runs\/\d{8}T\d{6}Z\/output\.jsonl$/);
      return /state=running/.test(world.stateFile() ?? "") ? '{"type":"system"}\n' : OUTPUT_TEXT;
    },
    async writeLocal(path, text) {
      calls.push(`write ${path}`);
      written[path] = text;
    },
    async destroy({ signal, onOutput }) {
      calls.push("destroy");
      if (world.lockedBy) throw lockError();
      world.lockedBy = name;
      try {
        await hooks.duringDestroy?.();
        if (signal.aborted) throw new Error("code: 255\n stderr: error: destroy canceled\n");
        onOutput("Destroying (dev)\n- hcloud:index/server:Server deleted\n");
        world.clock += MIN;
        if (world.server) world.destroys++;
        world.server = false;
      } finally {
        world.lockedBy = undefined;
      }
    },
    async sleep(ms) {
      const instead = hooks.onSleep?.(++sleeps);
      if (instead) return instead;
      world.clock += ms;
    },
    now: () => world.clock,
    log: (line) => logs.push(line),
  };
  const options = (extra: Partial<CycleOptions> = {}): CycleOptions => ({
    stack: "dev",
    runDir: `workflow-runs/${runDirName("dev", world.clock)}`,
    ...(hooks.interrupts ? { interrupts: hooks.interrupts } : {}),
    ...extra,
  });
  return { deps, calls, logs, written, options };
}

/** The run's folder and time stamps of a world whose box started its workflow. */
function runOf(world: World) {
  const run = runDirName("x", world.startedMs!).slice(2);
  return { run, dir: `workflow-runs/dev-${run}` };
}

describe("an ended workflow whose output cannot be fetched", () => {
  test("before the deadline the box is kept (10) and a later finish fetches and destroys it (0)", async () => {
    const world = new World();
    const starter = world.process("laptop");
    expect((await runDetach(starter.deps, starter.options())).exitCode).toBe(0);
    world.clock += 50 * MIN;
    const blip = world.process("ci");
    blip.deps.fetchFile = async () => {
      blip.calls.push("fetch -> ssh error");
      throw new Error("ssh exited 255: Connection reset by peer");
    };
    const kept = await runFinish(blip.deps, blip.options());
    expect(kept.exitCode).toBe(10);
    expect(kept.summary).toMatch(
      /^workflow dev: still running - the workflow ended \(success, claude exit 0, ran 42m00s\) but its output could not be fetched: .*; the box is kept until its output is fetched or its deadline .*\. Nothing changed; run it again later: /,
    );
    expect(blip.calls).not.toContain("destroy");
    expect(world.server).toBe(true);
    const later = world.process("ci");
    const done = await runFinish(later.deps, later.options());
    expect(done.exitCode).toBe(0);
    expect(later.calls).toContain("destroy");
    expect(world.destroys).toBe(1);
  });
});

describe("detach, then finish from anywhere", () => {
  test("detach returns once the workflow runs, printing the finish command; finishes say it still runs (10), then fetch and destroy (0), then find nothing (0)", async () => {
    const world = new World();
    const starter = world.process("laptop");
    const detached = await runDetach(starter.deps, starter.options());
    expect(detached.exitCode).toBe(0);
    expect(detached.outcome).toBe("detached");
    expect(detached.summary).toBe(
      `workflow dev: detached - the workflow runs on ${TARGET}; its deadline is 2026-01-01 13:14:20 UTC (70m: box timeout 60m + 10m margin). Finish it with: ${FINISH} (any time, from any machine with the stack's backend)`,
    );
    // the workflow starts 20 s after up returns: polled at 0 s and 15 s (no state file yet), seen running at 30 s
    expect(starter.calls).toEqual(["config", "up", "outputs", "read -> missing", "read -> missing", "read -> running"]);
    expect(world.server).toBe(true);

    world.clock += 20 * MIN;
    const early = world.process("ci");
    const running = await runFinish(early.deps, early.options());
    expect(running.exitCode).toBe(EXIT_CODES.running);
    expect(running.exitCode).toBe(10);
    expect(running.summary).toBe(
      `workflow dev: still running - the workflow is running on ${TARGET} for 20m10s (since 2026-01-01 12:04:20 UTC); deadline 2026-01-01 13:14:20 UTC (the workflow's start (2026-01-01 12:04:20 UTC, started= on the box) + 70m: box timeout 60m + 10m margin), in 49m50s. Nothing changed; run it again later: ${FINISH} (once the deadline has passed it destroys the box whatever the box says)`,
    );
    expect(early.calls).toEqual(["stackBox", "config", "outputs", "read -> running"]);

    world.clock += 30 * MIN;
    const later = world.process("ci");
    const done = await runFinish(later.deps, later.options());
    const { dir } = runOf(world);
    expect(done.exitCode).toBe(0);
    expect(done.summary).toBe(
      `workflow dev: success - claude exit 0, ran 42m00s; output in ${dir}/output.jsonl; box destroyed (volume kept)`,
    );
    expect(later.calls).toEqual([
      "stackBox",
      "config",
      "outputs",
      "read -> success",
      `write ${dir}/state`,
      "fetch",
      `write ${dir}/output.jsonl`,
      "destroy",
    ]);
    expect(later.written[`${dir}/output.jsonl`]).toBe(OUTPUT_TEXT);
    // the box's new key is kept in the saved state, and read past
    expect(later.written[`${dir}/state`]).toContain("agent=claude\n");

    const again = world.process("laptop");
    const nothing = await runFinish(again.deps, again.options());
    expect(nothing.exitCode).toBe(0);
    expect(nothing.outcome).toBe("gone");
    expect(again.calls).toEqual(["stackBox"]);
    expect(world.destroys).toBe(1);
  });

  test("a finish on a stack that is already destroyed says so, exits 0 and touches nothing", async () => {
    const world = new World();
    const p = world.process("laptop");
    const result = await runFinish(p.deps, p.options());
    expect(result.summary).toBe(
      "workflow dev: nothing to finish - stack dev has no box (no server in its state): an earlier finish or a destroy took it down, and its volume, if it has one, stays. npm run workflow -- --stack dev --detach starts the next run",
    );
    expect(result.exitCode).toBe(0);
    expect(p.calls).toEqual(["stackBox"]);
  });

  test("a box that has not written its state yet: still running (10), the deadline counted from the server's creation", async () => {
    const world = new World({ sshDown: [] });
    const starter = world.process("laptop");
    // up returns before the workflow starts: a finish right then finds no state file
    await runDetach(starter.deps, starter.options());
    world.startedMs = world.clock + 5 * MIN;
    const p = world.process("ci");
    const result = await runFinish(p.deps, p.options());
    expect(result.exitCode).toBe(10);
    expect(result.summary).toContain(
      "the workflow is pending on agent@agentbox-dev; deadline 2026-01-01 13:26:00 UTC (the server's creation (2026-01-01 12:01:00 UTC, in the stack's state) + 85m: box timeout 60m + 10m margin + 15m for the box to start it (agentbox:readyTimeoutMinutes)), in 1h21m30s",
    );
  });

  test("detach: a workflow not seen to start within the margin leaves the box for a finish, exit 3", async () => {
    const world = new World({ sshDown: [[0, 24 * 60 * MIN]] });
    const p = world.process("laptop");
    const result = await runDetach(p.deps, p.options());
    expect(result.exitCode).toBe(3);
    expect(result.summary).toBe(
      `workflow dev: cycle error - the workflow was not seen to start within 10m (10m margin; ssh to it failing: ssh exited 255: ssh: connect to host agentbox-dev port 22: Connection timed out). The box is left running: ${FINISH} fetches the output and destroys it once the workflow has ended or its deadline has passed, reached or not; to destroy it now: npm run pulumi -- destroy --exclude-protected --stack dev`,
    );
    expect(p.calls).not.toContain("destroy");
    expect(world.server).toBe(true);
  });

  test("detach: an interrupt while waiting for the start destroys the box, as in the foreground (130)", async () => {
    const interrupts = new Interrupts();
    const world = new World({ sshDown: [[0, 24 * 60 * MIN]] });
    const p = world.process("laptop", { interrupts, onSleep: (n) => void (n === 2 && interrupts.interrupt()) });
    const result = await runDetach(p.deps, p.options());
    expect(result.exitCode).toBe(130);
    expect(result.summary).toBe(
      "workflow dev: interrupted - interrupted while waiting for the workflow to start; box destroyed (volume kept)",
    );
    expect(world.server).toBe(false);
  });

  test("detach of a workflow that ended before it was seen running: exit 0, and the finish takes it from there", async () => {
    const world = new World({ agentMinutes: 0 });
    const p = world.process("laptop");
    const result = await runDetach(p.deps, p.options());
    expect(result.summary).toBe(
      `workflow dev: detached - the workflow has already ended (success). Finish it with: ${FINISH} (any time, from any machine with the stack's backend)`,
    );
    const f = world.process("ci");
    expect((await runFinish(f.deps, f.options())).exitCode).toBe(0);
    expect(world.server).toBe(false);
  });
});

describe("the foreground survives this machine sleeping or going offline", () => {
  test("sleep and wake mid-workflow: polls fail while offline, the clock jumps 50 minutes, the first reads after waking fail too; the output is still fetched (0)", async () => {
    // offline for 10 minutes from the 8th minute; asleep at the 60th poll for 50 minutes; 45 s without network after waking
    const world = new World({ sshDown: [[8 * MIN, 18 * MIN]] });
    let woke = 0;
    const p = world.process("laptop", {
      onSleep: (n) => {
        if (n !== 60) return;
        world.clock += 50 * MIN;
        woke = world.clock - T0;
        world.o.sshDown!.push([woke, woke + 45_000]);
      },
    });
    const result = await runCycle(p.deps, p.options());
    const { dir } = runOf(world);
    expect(result.exitCode).toBe(0);
    expect(result.summary).toBe(
      `workflow dev: success - claude exit 0, ran 42m00s; output in ${dir}/output.jsonl; box destroyed (volume kept)`,
    );
    expect(p.logs).toContain(
      "workflow dev: ssh to agent@agentbox-dev failed (1 in a row; trying until the deadline, 1h06m20s from now): ssh exited 255: ssh: connect to host agentbox-dev port 22: Connection timed out",
    );
    expect(p.logs).toContain("workflow dev: ssh to agent@agentbox-dev works again, after 40 failed reads");
    expect(p.logs).toContain("workflow dev: ssh to agent@agentbox-dev works again, after 2 failed reads");
    expect(p.logs).toContain(
      "workflow dev: deadline 2026-01-01 13:14:20 UTC: the workflow's start (2026-01-01 12:04:20 UTC, started= on the box) + 70m (box timeout 60m + 10m margin)",
    );
    expect(world.destroys).toBe(1);
  });

  test("asleep past the deadline: the box that ended meanwhile is still read and its output fetched; two failed reads after waking are not an unreachable box", async () => {
    const world = new World();
    const p = world.process("laptop", {
      onSleep: (n) => {
        if (n !== 5) return;
        world.clock += 3 * 60 * MIN;
        const woke = world.clock - T0;
        world.o.sshDown = [[woke, woke + 45_000]];
      },
    });
    const result = await runCycle(p.deps, p.options());
    expect(result.exitCode).toBe(0);
    expect(p.calls.filter((c) => c.startsWith("read")).slice(-4)).toEqual([
      "read -> running",
      "read -> ssh error",
      "read -> ssh error",
      "read -> success",
    ]);
    expect(p.logs).toContain(
      "workflow dev: ssh to agent@agentbox-dev failed (1 in a row; the deadline has passed: 3 in a row and the box counts as unreachable): ssh exited 255: ssh: connect to host agentbox-dev port 22: Connection timed out",
    );
  });

  test("offline until past the deadline: the box is destroyed unreached, exit 4, and the line says where its output stays", async () => {
    const world = new World({ sshDown: [[10 * MIN, 24 * 60 * MIN]] });
    const p = world.process("laptop");
    const result = await runCycle(p.deps, p.options());
    const { run, dir } = runOf(world);
    expect(result.exitCode).toBe(4);
    expect(result.summary).toMatch(
      new RegExp(
        `^workflow dev: unreachable - no end state from the box within 70m \\(box timeout 60m \\+ 10m margin\\), and ssh to it was failing at the deadline .*; box destroyed \\(volume kept\\); its output was not fetched: it stays on the volume, in the agent's home: ~/agentbox-runs/${run}/$`,
      ),
    );
    // the deadline is the workflow's start + 70m, wall-clock, and not a poll later than the last tries
    expect(world.clock - world.startedMs!).toBeGreaterThanOrEqual(70 * MIN);
    expect(world.clock - world.startedMs!).toBeLessThan(71 * MIN + MIN);
    expect(p.calls).toContain(`write ${dir}/state`);
    expect(world.destroys).toBe(1);
  });
});

describe("killed mid-cycle, then finished", () => {
  test("the process is killed while it waits; a finish from another machine says it still runs, a later one fetches and destroys", async () => {
    const world = new World();
    let killed!: () => void;
    const dead = new Promise<void>((resolve) => (killed = resolve));
    const laptop = world.process("laptop", {
      onSleep: (n) => {
        if (n < 8) return;
        killed();
        // the process is gone: its sleep never ends
        return new Promise<void>(() => undefined);
      },
    });
    void runCycle(laptop.deps, laptop.options());
    await dead;
    expect(laptop.calls.at(-1)).toBe("read -> running");
    expect(laptop.calls).not.toContain("destroy");

    const ci = world.process("ci");
    const running = await runFinish(ci.deps, ci.options());
    expect(running.exitCode).toBe(10);
    expect(running.summary).toMatch(
      /the workflow is running on agent@agentbox-dev for 1m25s \(since 2026-01-01 12:04:20 UTC\)/,
    );

    world.clock += 45 * MIN;
    const ci2 = world.process("ci");
    const done = await runFinish(ci2.deps, ci2.options());
    expect(done.exitCode).toBe(0);
    expect(ci2.written[`${runOf(world).dir}/output.jsonl`]).toBe(OUTPUT_TEXT);
    expect(world.server).toBe(false);
  });

  test("killed, and the box then cut off: a finish before the deadline changes nothing (10); one after it destroys the box unreached (4) and says where the output stays", async () => {
    const world = new World({ sshDown: [[15 * MIN, 24 * 60 * MIN]] });
    const starter = world.process("laptop");
    expect((await runDetach(starter.deps, starter.options())).exitCode).toBe(0);

    world.clock = T0 + 60 * MIN;
    const before = world.process("ci");
    const waiting = await runFinish(before.deps, before.options());
    expect(waiting.exitCode).toBe(10);
    // this finish never reads started= from the box: the deadline counts from the server's creation + readiness
    expect(waiting.summary).toBe(
      `workflow dev: still running - ssh to ${TARGET} failed 3 times (ssh exited 255: ssh: connect to host agentbox-dev port 22: Connection timed out); the workflow may still be running; deadline 2026-01-01 13:26:00 UTC (the server's creation (2026-01-01 12:01:00 UTC, in the stack's state) + 85m: box timeout 60m + 10m margin + 15m for the box to start it (agentbox:readyTimeoutMinutes)), in 25m30s, after which a finish destroys the box, reached or not. Nothing changed; run it again later: ${FINISH}`,
    );
    expect(before.calls).not.toContain("destroy");

    world.clock = T0 + 90 * MIN;
    const after = world.process("ci");
    const result = await runFinish(after.deps, after.options());
    expect(result.exitCode).toBe(EXIT_CODES.unreachable);
    expect(result.exitCode).toBe(4);
    expect(result.summary).toMatch(
      /^workflow dev: unreachable - the box did not answer \(3 ssh reads: .*Connection timed out\) and its deadline 2026-01-01 13:26:00 UTC .*passed 4m30s ago; box destroyed \(volume kept\); its output was not fetched: it stays on the volume, in the agent's home: ~\/agentbox-runs\/<run>\/ \(the newest run there\)$/,
    );
    expect(after.logs).toContain(
      "workflow dev: the output stays on the volume, in the agent's home: ~/agentbox-runs/<run>/ (the newest run there). To get it, bring a box back on the volume with npm run up -- --stack dev (a new box runs the workflow again: remove agentbox:workflowPrompt or workflowPromptFile first if you only want the output), then scp agent@<box>:agentbox-runs/<run>/output.jsonl . ; or attach the volume to a server of your own in the cloud console",
    );
    expect(after.calls).toEqual([
      "stackBox",
      "config",
      "outputs",
      "read -> ssh error",
      "read -> ssh error",
      "read -> ssh error",
      "destroy",
    ]);
    expect(world.server).toBe(false);
  });

  test("a box past its deadline that still says running (its own timeout failed): destroyed as a timeout with its partial output (2)", async () => {
    const world = new World({ stuck: true });
    const starter = world.process("laptop");
    await runDetach(starter.deps, starter.options());
    world.clock = world.startedMs! + 71 * MIN;
    const p = world.process("ci");
    const result = await runFinish(p.deps, p.options());
    expect(result.exitCode).toBe(2);
    expect(result.summary).toBe(
      `workflow dev: timeout - no end state from the box within 70m (box timeout 60m + 10m margin), last state running; partial output in ${runOf(world).dir}/output.jsonl; box destroyed (volume kept)`,
    );
  });

  test("unreachable, with no creation time in the stack's state: nothing destroyed, exit 3 naming the destroy command", async () => {
    const world = new World({ recordsCreation: false, sshDown: [[0, 24 * 60 * MIN]] });
    const starter = world.process("laptop");
    await runDetach(starter.deps, starter.options());
    const p = world.process("ci");
    const result = await runFinish(p.deps, p.options());
    expect(result.exitCode).toBe(3);
    expect(result.summary).toContain(
      "so this run cannot tell whether its deadline has passed; nothing changed. Destroy it once you no longer need it: npm run pulumi -- destroy --exclude-protected --stack dev",
    );
    expect(world.server).toBe(true);
  });

  test("an interrupt during the finish's destroy: Pulumi is told to cancel, exit 130, and the line says to finish again", async () => {
    const interrupts = new Interrupts();
    const world = new World({ agentMinutes: 0 });
    const starter = world.process("laptop");
    await runDetach(starter.deps, starter.options());
    const p = world.process("ci", { interrupts, duringDestroy: async () => void interrupts.interrupt() });
    const result = await runFinish(p.deps, p.options());
    expect(result.exitCode).toBe(130);
    expect(result.summary).toMatch(
      /, but the destroy was interrupted: stack dev may still have its box\. Finish it with: npm run workflow -- --stack dev --finish$/,
    );
    expect(world.server).toBe(true);
  });
});

describe("two finishers at once: the stack's lock serialises them", () => {
  test("while one destroys, the other is turned away (11) having changed nothing; a third finds no box (0); one destroy in all", async () => {
    const world = new World({ agentMinutes: 5 });
    const starter = world.process("laptop");
    await runDetach(starter.deps, starter.options());
    world.clock += 30 * MIN;

    let second: Awaited<ReturnType<typeof runFinish>> | undefined;
    const person = world.process("person");
    const cron = world.process("cron", {
      // the person's finish runs while the cron job's destroy holds the lock
      duringDestroy: async () => void (second = await runFinish(person.deps, person.options())),
    });
    const first = await runFinish(cron.deps, cron.options());
    expect(first.exitCode).toBe(0);
    expect(second!.exitCode).toBe(EXIT_CODES.locked);
    expect(second!.exitCode).toBe(11);
    expect(second!.summary).toBe(
      `workflow dev: locked - success (claude exit 0, ran 5m00s; output in ${runOf(world).dir}/output.jsonl), but another Pulumi operation holds stack dev's lock (another finish, an up or a destroy), so this run changed nothing. Once it is done, ${FINISH} says what is left`,
    );
    expect(person.logs).toContain(
      "  destroy |  stderr: error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with `pulumi cancel`.",
    );
    expect(world.destroys).toBe(1);

    const third = world.process("person");
    const after = await runFinish(third.deps, third.options());
    expect(after.outcome).toBe("gone");
    expect(after.exitCode).toBe(0);
    expect(world.destroys).toBe(1);
  });

  test("a lock held by someone's up: the finish exits 11 and the box stays for the next finish", async () => {
    const world = new World({ agentMinutes: 5 });
    const starter = world.process("laptop");
    await runDetach(starter.deps, starter.options());
    world.clock += 30 * MIN;
    world.lockedBy = "someone's pulumi up";
    const p = world.process("cron");
    const result = await runFinish(p.deps, p.options());
    expect(result.exitCode).toBe(11);
    expect(world.server).toBe(true);
    world.lockedBy = undefined;
    const q = world.process("cron");
    expect((await runFinish(q.deps, q.options())).exitCode).toBe(0);
    expect(world.destroys).toBe(1);
  });

  test("an up that finds the stack locked: exit 11, nothing destroyed, even with --destroy-on-failure", async () => {
    const world = new World();
    world.lockedBy = "a finish";
    const p = world.process("laptop");
    const result = await runDetach(p.deps, p.options({ destroyOnFailure: true }));
    expect(result.exitCode).toBe(11);
    expect(result.summary).toBe(
      `workflow dev: locked - pulumi up did not start: another Pulumi operation holds stack dev's lock (another finish, an up or a destroy), so this run changed nothing. Once it is done, ${FINISH} says what is left`,
    );
    expect(p.calls).toEqual(["config", "up"]);
  });
});

describe("reading the stack", () => {
  test.each<[string, unknown, unknown]>([
    [
      "a Hetzner server with its creation time",
      {
        deployment: {
          resources: [
            { type: "pulumi:pulumi:Stack" },
            { type: "hcloud:index/volume:Volume", created: "2025-12-01T00:00:00Z" },
            { type: "hcloud:index/server:Server", created: "2026-01-01T12:01:00.123456789Z" },
          ],
        },
      },
      { server: true, createdMs: Date.UTC(2026, 0, 1, 12, 1, 0, 123) },
    ],
    [
      "a DigitalOcean droplet, as exported JSON text",
      JSON.stringify({
        deployment: {
          resources: [{ type: "digitalocean:index/droplet:Droplet", created: "2026-01-01T12:01:00+01:00" }],
        },
      }),
      { server: true, createdMs: Date.UTC(2026, 0, 1, 11, 1, 0) },
    ],
    [
      "a server from a CLI that recorded no times",
      { deployment: { resources: [{ type: "hcloud:index/server:Server" }] } },
      { server: true },
    ],
    [
      "only the volume left (destroyed, protected resources kept)",
      { deployment: { resources: [{ type: "pulumi:pulumi:Stack" }, { type: "hcloud:index/volume:Volume" }] } },
      { server: false },
    ],
    ["a new stack", { version: 3, deployment: {} }, { server: false }],
    ["nothing at all", "", { server: false }],
  ])("boxInState: %s", (_, exported, box) => {
    expect(boxInState(exported)).toEqual(box);
  });

  test.each<[string, Error, boolean]>([
    ["the Automation API's ConcurrentUpdateError (self-managed backend)", lockError(), true],
    [
      "Pulumi Cloud's conflict",
      new Error("code: 255\n stderr: error: [409] Conflict: Another update is currently in progress.\n"),
      true,
    ],
    ["a plain message naming the lock", new Error("the stack is currently locked by 2 lock(s)"), true],
    ["another failure", new Error("error: hcloud: server limit exceeded"), false],
  ])("isLockError: %s → %s", (_, error, locked) => {
    expect(isLockError(error)).toBe(locked);
  });

  test("the real error is a ConcurrentUpdateError", () => {
    expect(lockError().name).toBe("ConcurrentUpdateError");
  });
});

describe("interrupts of a finish", () => {
  test.each([
    [
      1,
      "stopping: Pulumi cancels a destroy that runs (it saves the state); npm run workflow -- --stack dev --finish finishes later. Ctrl-C again quits at once",
    ],
    [2, "quitting at once; npm run workflow -- --stack dev --finish finishes later"],
  ])("interrupt %d says: %s", (count, line) => {
    expect(interruptLine("finish", false, "dev", count)).toBe(line);
  });

  test("an interrupt before the destroy: nothing destroyed, exit 130", async () => {
    const interrupts = new Interrupts();
    interrupts.interrupt();
    const world = new World({ agentMinutes: 0 });
    const starter = world.process("laptop");
    world.server = true;
    const p = world.process("ci", { interrupts });
    const result = await runFinish(p.deps, p.options());
    expect(result.summary).toBe(
      `workflow dev: interrupted - interrupted before the box was destroyed; nothing changed; run it again: ${FINISH}`,
    );
    expect(p.calls).toEqual([]);
    expect(starter.calls).toEqual([]);
  });
});
