#!/usr/bin/env node
// Runs the Pulumi CLI that the `pulumi` npm package provides (it downloads the CLI on first use into
// ~/.pulumi/versions), so nothing needs installing beside `npm ci`. State goes to a local backend (~/.pulumi)
// unless you chose one: PULUMI_BACKEND_URL, or an earlier `pulumi login` (Pulumi Cloud, S3, ...).
//
//   npm run up -- --stack <name>     create the stack if it is new, then `pulumi up` on it
//   npm run pulumi -- <any pulumi command>
//
// Ctrl-C (SIGINT) and SIGTERM reach the CLI and this waits for it: Pulumi cancels (it finishes the operations in
// flight, saves the state and releases the stack lock), and this exits with its status. A second one makes
// Pulumi stop at once.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { constants, homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spentKeyReplacements } from "./spent-key.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The backend to use when the user has not chosen one, or undefined when they have. */
export function defaultBackend(env, home = homedir()) {
  if (env.PULUMI_BACKEND_URL) return undefined;
  const credentials = join(env.PULUMI_HOME ?? join(home, ".pulumi"), "credentials.json");
  if (existsSync(credentials)) {
    try {
      if (JSON.parse(readFileSync(credentials, "utf8")).current) return undefined;
    } catch {
      // an unreadable credentials file is the CLI's to report
    }
  }
  return "file://~";
}

/** The stack named by --stack/-s in argv, if any. */
export function stackArg(argv) {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--stack" || a === "-s") return argv[i + 1];
    if (a.startsWith("--stack=")) return a.slice("--stack=".length);
  }
  return undefined;
}

/**
 * A signal that comes this soon after the previous one is the same interrupt delivered again: a launcher may pass
 * on to its child a Ctrl-C that the terminal already sent to the child's whole process group (tsx does when the
 * child is slow to acknowledge it).
 */
export const SAME_INTERRUPT_MS = 250;

/**
 * Whether /proc/<pid>/stat describes a process in the foreground process group of its terminal (the group a
 * Ctrl-C typed there is sent to).
 */
export function foregroundFromProcStat(text) {
  // pid (comm) state ppid pgrp session tty_nr tpgid ...; comm may itself hold spaces and parentheses
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const pgrp = Number(fields[2]);
  const ttyNr = Number(fields[4]);
  const tpgid = Number(fields[5]);
  return ttyNr !== 0 && pgrp > 0 && tpgid === pgrp;
}

/**
 * Whether this process is in its terminal's foreground process group. Then a Ctrl-C typed there has reached
 * every process of the group, the Pulumi CLI included, and passing it on would be Pulumi's second one
 * ("terminate now").
 */
export function inTerminalForeground() {
  // Windows' console sends Ctrl-C to every process attached to it
  if (process.platform === "win32") return true;
  try {
    return foregroundFromProcStat(readFileSync("/proc/self/stat", "utf8"));
  } catch {
    // no /proc (macOS, the BSDs): ps knows
  }
  const ps = spawnSync("ps", ["-o", "pgid=", "-o", "tpgid=", "-p", String(process.pid)], { encoding: "utf8" });
  if (ps.status === 0) {
    const [pgid, tpgid] = ps.stdout.trim().split(/\s+/).map(Number);
    return pgid > 0 && pgid === tpgid;
  }
  return process.stdin.isTTY === true;
}

/**
 * Calls onInterrupt for each SIGINT or SIGTERM this process gets, once per interrupt (a repeat within
 * SAME_INTERRUPT_MS is dropped), with `fromTerminal` true when it was a Ctrl-C typed in the terminal whose
 * foreground this process is in (its children in the same process group got it too). Returns the function that
 * removes the listeners.
 */
export function watchInterrupts(onInterrupt, now = Date.now) {
  let last = -Infinity;
  let count = 0;
  const listener = (signal) => {
    const at = now();
    const repeat = at - last < SAME_INTERRUPT_MS;
    last = at;
    if (repeat) return;
    count++;
    onInterrupt({ signal, count, fromTerminal: signal === "SIGINT" && inTerminalForeground() });
  };
  process.on("SIGINT", listener);
  process.on("SIGTERM", listener);
  return () => {
    process.off("SIGINT", listener);
    process.off("SIGTERM", listener);
  };
}

/** A child's exit as a shell reports it: its code, or 128 + the number of the signal that ended it. */
const exitStatus = (code, signal) => code ?? 128 + (constants.signals[signal] ?? 0);

/**
 * Runs the Pulumi CLI at `bin` for each argv in turn and resolves to the exit status of the last one run: it stops
 * at the first that fails, and after an interrupt (130 when that leaves a command out). SIGINT and SIGTERM are passed on to the running CLI, which is waited for.
 */
export async function runPulumi(bin, commands, { env, cwd, log = (line) => console.error(line) }) {
  let child;
  let childShared = false;
  let interrupted = false;
  const stop = watchInterrupts(({ signal, count, fromTerminal }) => {
    interrupted = true;
    if (count === 1) {
      log(
        `agentbox: ${signal === "SIGINT" ? "Ctrl-C" : signal}: waiting for Pulumi to cancel (it finishes the operations in flight and releases the stack lock); Ctrl-C again stops it at once`,
      );
    }
    // a Ctrl-C from the terminal has already reached a child in this process group
    if (child && child.exitCode === null && child.signalCode === null && !(fromTerminal && childShared)) {
      child.kill(signal);
    }
  });
  try {
    let status = 0;
    for (const args of commands) {
      if (interrupted) return 130;
      // A child outside the terminal's foreground gets a group of its own, so that a signal sent to this
      // process group (a CI runner's, say) reaches it once, through here, and not a second time directly.
      childShared = process.platform === "win32" || inTerminalForeground();
      child = spawn(bin, args, { stdio: "inherit", env, cwd, detached: !childShared });
      status = await new Promise((done) => {
        child.on("error", (e) => {
          log(`agentbox: could not run ${bin}: ${e.message}`);
          done(1);
        });
        child.on("exit", (code, signal) => done(exitStatus(code, signal)));
      });
      if (status !== 0) return status;
    }
    return status;
  } finally {
    stop();
  }
}

/** `npm run pulumi` / `npm run up`: resolves to the exit status. */
export function main(
  argv,
  bin = join(ROOT, "node_modules", ".bin", process.platform === "win32" ? "pulumi.cmd" : "pulumi"),
) {
  const env = { ...process.env };
  const backend = defaultBackend(env);
  if (backend) {
    env.PULUMI_BACKEND_URL = backend;
    console.error(
      `agentbox: using a local state backend (${backend}); set PULUMI_BACKEND_URL or run \`pulumi login\` to use another`,
    );
  }
  if (argv[0] !== "up") return runPulumi(bin, [argv], { env, cwd: ROOT });
  const stack = stackArg(argv);
  const select = stack
    ? runPulumi(bin, [["stack", "select", "--create", stack]], { env, cwd: ROOT })
    : Promise.resolve(0);
  return select.then((status) => {
    if (status !== 0) return status;
    const replace = spentKeysOf(bin, stack, env);
    for (const urn of replace) {
      console.error(
        `agentbox: the stack's tailnet key (${urn}) has expired or soon will, and no server exists yet: this up replaces it, so that the new box gets a fresh one`,
      );
    }
    return runPulumi(bin, [[...argv, ...replace.map((urn) => `--replace=${urn}`)]], { env, cwd: ROOT });
  });
}

/** The tailnet keys `up` must replace (see spent-key.mjs), from the stack's state; none when it cannot be read. */
function spentKeysOf(bin, stack, env) {
  const r = spawnSync(bin, ["stack", "export", ...(stack ? ["--stack", stack] : [])], {
    encoding: "utf8",
    env,
    cwd: ROOT,
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.status !== 0) return [];
  try {
    return spentKeyReplacements(r.stdout);
  } catch {
    return [];
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then((status) => process.exit(status));
}
