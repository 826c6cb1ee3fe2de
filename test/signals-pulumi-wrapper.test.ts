import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { describe, expect, test } from "vitest";
// @ts-expect-error: a plain ES module without types
import { SAME_INTERRUPT_MS, foregroundFromProcStat } from "../scripts/pulumi.mjs";

/**
 * A stand-in Pulumi CLI: it records its argv and every signal it gets, and behaves as the real one does on an
 * interrupt: the first one cancels (it takes CANCEL_MS to finish what is in flight, then exits CANCEL_EXIT), a
 * second one terminates it at once (TERMINATE_EXIT). `stack ...` commands end at once with 0; anything else
 * runs for RUN_MS and exits 0.
 */
const STAND_IN = `#!/usr/bin/env node
const fs = require("node:fs");
const log = (event) => fs.appendFileSync(process.env.STAND_IN_LOG, JSON.stringify({ pid: process.pid, ...event }) + "\\n");
const argv = process.argv.slice(2);
const exit = (code) => { log({ event: "exit", code }); process.exit(code); };
// the handlers come before the "start" the tests wait for: an interrupt sent as soon as that is logged must find
// them (one that came before would end the stand-in with 130, as a CI run once saw)
let signals = 0;
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    log({ event: "signal", signal });
    if (++signals === 1) setTimeout(() => exit(Number(process.env.CANCEL_EXIT)), Number(process.env.CANCEL_MS));
    else exit(Number(process.env.TERMINATE_EXIT));
  });
}
log({ event: "start", argv });
if (argv[0] === "stack" && argv[1] === "export" && process.env.STAND_IN_EXPORT) {
  process.stdout.write(process.env.STAND_IN_EXPORT);
}
if (argv[0] === "stack") exit(0);
setTimeout(() => exit(0), Number(process.env.RUN_MS ?? 20000));
`;

const CANCEL_EXIT = 42;
const TERMINATE_EXIT = 43;

interface Logged {
  pid: number;
  event: "start" | "signal" | "exit";
  argv?: string[];
  signal?: string;
  code?: number;
}

function standIn(cancelMs: number) {
  const dir = mkdtempSync(join(tmpdir(), "agentbox-pulumi-stand-in-"));
  const bin = join(dir, "pulumi");
  writeFileSync(bin, STAND_IN);
  chmodSync(bin, 0o755);
  const logFile = join(dir, "log.jsonl");
  const env = {
    ...process.env,
    STAND_IN_LOG: logFile,
    CANCEL_MS: String(cancelMs),
    CANCEL_EXIT: String(CANCEL_EXIT),
    TERMINATE_EXIT: String(TERMINATE_EXIT),
  };
  const logged = (): Logged[] =>
    existsSync(logFile)
      ? readFileSync(logFile, "utf8")
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as Logged)
      : [];
  return { dir, bin, env, logged };
}

/** `node scripts/pulumi.mjs <argv>`, with the stand-in for the CLI. */
function wrapperCommand(bin: string, argv: string[]): string[] {
  const code = `import("./scripts/pulumi.mjs").then(async (m) => process.exit(await m.main(${JSON.stringify(argv)}, ${JSON.stringify(bin)})))`;
  return [process.execPath, "-e", code];
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const found = probe();
    if (found !== undefined) return found;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(20);
  }
}

const exited = (child: ChildProcess) => new Promise<number | null>((done) => child.on("exit", (code) => done(code)));

const upStarted = (s: ReturnType<typeof standIn>) => () =>
  s.logged().find((e) => e.event === "start" && e.argv?.[0] === "up");

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("npm run up / npm run pulumi pass an interrupt on to the Pulumi CLI and wait for it", () => {
  /**
   * The wrapper in a session of its own, as under a CI runner or `kill -INT <pid>`: no terminal sent the signal
   * to the stand-in, so only the wrapper can pass it on.
   */
  function startWrapper(s: ReturnType<typeof standIn>, argv: string[]) {
    const [node, ...args] = wrapperCommand(s.bin, argv);
    const wrapper = spawn(node!, args, { env: s.env, cwd: process.cwd(), detached: true, stdio: "pipe" });
    let stderr = "";
    wrapper.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
    return { wrapper, exit: exited(wrapper), stderr: () => stderr };
  }
  test("Ctrl-C during up: the CLI gets one SIGINT, the wrapper waits for its cancel and exits with its status", async () => {
    const s = standIn(400);
    const w = startWrapper(s, ["up", "--stack", "web", "--yes"]);
    const up = await until("the stand-in's up", upStarted(s));
    process.kill(w.wrapper.pid!, "SIGINT");
    const status = await w.exit;
    // by the time the wrapper has exited, the CLI has finished its cancel and is gone
    const events = s.logged().map(({ event, argv, signal, code }) => ({ event, argv, signal, code }));
    expect(events).toEqual([
      { event: "start", argv: ["stack", "select", "--create", "web"] },
      { event: "exit", code: 0 },
      // the state, for a tailnet key left expired by a failed earlier up (scripts/spent-key.mjs)
      { event: "start", argv: ["stack", "export", "--stack", "web"] },
      { event: "exit", code: 0 },
      { event: "start", argv: ["up", "--stack", "web", "--yes"] },
      { event: "signal", signal: "SIGINT" },
      { event: "exit", code: CANCEL_EXIT },
    ]);
    expect(status).toBe(CANCEL_EXIT);
    expect(alive(up.pid)).toBe(false);
    expect(w.stderr()).toContain(
      "agentbox: Ctrl-C: waiting for Pulumi to cancel (it finishes the operations in flight and releases the stack lock); Ctrl-C again stops it at once",
    );
  });

  test("SIGTERM is passed on as SIGTERM (the CLI cancels on it as on Ctrl-C)", async () => {
    const s = standIn(100);
    const w = startWrapper(s, ["destroy", "--yes"]);
    await until("the stand-in", () => s.logged().find((e) => e.event === "start"));
    process.kill(w.wrapper.pid!, "SIGTERM");
    expect(await w.exit).toBe(CANCEL_EXIT);
    expect(s.logged().filter((e) => e.event === "signal")).toMatchObject([{ signal: "SIGTERM" }]);
  });

  test("a second Ctrl-C is passed on too: the CLI stops at once, and the wrapper exits with that status", async () => {
    const s = standIn(5_000);
    const w = startWrapper(s, ["up", "--yes"]);
    await until("the stand-in's up", upStarted(s));
    process.kill(w.wrapper.pid!, "SIGINT");
    await until("the first signal", () => s.logged().find((e) => e.event === "signal"));
    await delay(SAME_INTERRUPT_MS + 50);
    process.kill(w.wrapper.pid!, "SIGINT");
    expect(await w.exit).toBe(TERMINATE_EXIT);
    expect(s.logged().filter((e) => e.event === "signal")).toHaveLength(2);
  });

  test("the same interrupt delivered twice at once (a launcher passing on the Ctrl-C its child already got) reaches the CLI once", async () => {
    const s = standIn(300);
    const w = startWrapper(s, ["up", "--yes"]);
    await until("the stand-in's up", upStarted(s));
    process.kill(w.wrapper.pid!, "SIGINT");
    process.kill(w.wrapper.pid!, "SIGINT");
    expect(await w.exit).toBe(CANCEL_EXIT);
    expect(s.logged().filter((e) => e.event === "signal")).toHaveLength(1);
  });

  test("an interrupt during `stack select` leaves `up` out", async () => {
    const s = standIn(100);
    // a stack select that takes its time
    writeFileSync(s.bin, STAND_IN.replace('if (argv[0] === "stack") exit(0);', ""));
    const w = startWrapper(s, ["up", "--stack", "web"]);
    await until("the stand-in's stack select", () => s.logged().find((e) => e.event === "start"));
    process.kill(w.wrapper.pid!, "SIGINT");
    expect(await w.exit).toBe(CANCEL_EXIT);
    expect(s.logged().filter((e) => e.event === "start")).toHaveLength(1);
  });

  test("without an interrupt the CLI's own status is the wrapper's", () => {
    const s = standIn(100);
    const [node, ...args] = wrapperCommand(s.bin, ["preview"]);
    const r = spawnSync(node!, args, { env: { ...s.env, RUN_MS: "10" }, timeout: 10_000 });
    expect(r.status).toBe(0);
    expect(s.logged().map((e) => e.event)).toEqual(["start", "exit"]);
  });
});

describe("a Ctrl-C typed in a real terminal (a pseudo-terminal from script(1))", () => {
  // script(1) is Debian's bsdutils (essential): on the machines this runs on it is always there, and a missing one
  // fails the test rather than skipping it
  test("reaches the CLI once, from the terminal: the wrapper does not pass it on a second time, and waits", async () => {
    const s = standIn(400);
    const command = wrapperCommand(s.bin, ["up", "--yes"])
      .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
      .join(" ");
    // -e: script exits with the command's status; the wrapper and the stand-in are the pty's foreground group.
    // script runs the command with $SHELL -c, and dash (Debian's sh) stays there as the wrapper's parent, in the same
    // group: a non-interactive shell dies of the Ctrl-C (130), where a user's interactive shell would ignore it. exec
    // puts the wrapper in the shell's place, as a terminal's own command, with any shell (sh here, as where SHELL is
    // unset: a CI run failed on that, with bash it passed)
    const term = spawn("script", ["-qefc", `exec ${command}`, "/dev/null"], {
      env: { ...s.env, SHELL: "/bin/sh" },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const exit = exited(term);
    await until("the stand-in's up", upStarted(s));
    term.stdin!.write("\x03");
    expect(await exit).toBe(CANCEL_EXIT);
    expect(s.logged().filter((e) => e.event === "signal")).toMatchObject([{ signal: "SIGINT" }]);
  });
});

test.each([
  ["a process in its terminal's foreground group", "4242 (node) S 4200 4242 4100 34816 4242 4194560", true],
  ["a background job", "4242 (node) S 4200 4242 4100 34816 4300 4194560", false],
  ["no terminal at all", "4242 (node) S 4200 4242 4242 0 -1 4194560", false],
  ["a command name with spaces and parentheses", "4242 (a (b) c) S 4200 4242 4100 34816 4242 0", true],
])("foregroundFromProcStat: %s", (_, stat, foreground) => {
  expect(foregroundFromProcStat(stat)).toBe(foreground);
});
