/**
 * One whole workflow cycle for a stack that names a workflow (agentbox:workflowPrompt or workflowPromptFile):
 * `pulumi up`, wait until the box's state file says the workflow ended, copy its output to
 * workflow-runs/<stack>-<run>/, then destroy the box (the protected volume stays). Or the same in two halves that
 * need no machine to stay awake in between: --detach starts it, --finish (any time, from anywhere) ends it.
 *
 *   npm run workflow -- --stack nightly
 *   npm run workflow -- --stack nightly --detach
 *   npm run workflow -- --stack nightly --finish
 *
 * The logic is scripts/workflow-cycle.ts; this file wires in the Automation API and ssh.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { parseArgs } from "node:util";
import type { Stack } from "@pulumi/pulumi/automation";
import {
  type CycleDeps,
  DEFAULT_MARGIN_MINUTES,
  DEFAULT_POLL_SECONDS,
  EXIT_CODES,
  Interrupts,
  LAST_TRIES,
  STATE_PATH,
  boxInState,
  destroyCommand,
  errorLine,
  finishCommand,
  pulumiSignal,
  runCycle,
  runDetach,
  runDirName,
  runFinish,
} from "./workflow-cycle";
import { spentKeyReplacements } from "./spent-key.mjs";

const ROOT = join(__dirname, "..");

export const USAGE = `usage: npm run workflow -- --stack <name> [--detach | --finish] [options]

Creates the stack's box, waits until its workflow ends (state success, failure or timeout on the box), copies
the output to workflow-runs/<stack>-<run>/, then destroys the box, keeping protected resources (the volume).
Or in two halves, with no machine awake in between:

  --detach                create the box, wait until its workflow has started, then exit (0), printing the
                          --finish command; the box runs the workflow on its own
  --finish                look at the stack's workflow once: while it runs, say so (how long it has run, its
                          deadline) and exit 10, changing nothing; once it has ended, or its deadline has passed,
                          fetch the output and destroy the box, keeping protected resources. Any time, from any
                          machine with the stack's backend and credentials, any number of times

  --stack, -s <name>      the stack; it must set agentbox:workflowPrompt or agentbox:workflowPromptFile
  --poll-seconds <n>      how often to read the box's state file over ssh (default ${DEFAULT_POLL_SECONDS})
  --keep                  leave the box running at the end (prints the command that destroys it); not with
                          --detach or --finish
  --destroy-on-failure    destroy even when pulumi up fails (by default the box is left to look at); not with
                          --finish
  --help, -h              this text

The deadline: the workflow's timeout + ${DEFAULT_MARGIN_MINUTES} minutes, from its start as the box recorded it (started= in its state
file); before the box has said so, from when up returns (+ agentbox:readyTimeoutMinutes when
agentbox:waitForReady is false), and for --finish from the server's creation in the stack's state +
agentbox:readyTimeoutMinutes. It is wall-clock time: a machine that slept or was offline past it finds it passed.
Failed ssh reads before it are retried, however many. Past it, the box is destroyed whether it answers or not
(not: ${LAST_TRIES} failed reads in a row, and then its output stays on the volume, when the stack has one, in the
agent's home: ~/agentbox-runs/<run>/; the line says how to get it).

Two finishes at once (a scheduled job and a person): the stack's lock lets one destroy; the other exits 11 having
changed nothing, and a finish after that finds no box (exit 0).

Ctrl-C (or SIGTERM) cancels pulumi up or ends the wait, then destroys the box (unless --keep); Ctrl-C during that
destroy cancels it and prints what is left; a third one quits at once. With --finish, Ctrl-C cancels what runs
(Pulumi cancels a destroy) and nothing more is done.

Exit: 0 success (--detach: the workflow has started; --finish: the stack has no box, nothing to finish),
1 failure, 2 timeout, 3 the cycle itself failed (up, ssh, destroy, ...), 4 the box was destroyed without its
output (it did not answer past its deadline), 10 --finish: the workflow still runs (nothing changed), 11 another
Pulumi operation holds the stack's lock (nothing changed), 130 interrupted.
A local-backend stack needs PULUMI_CONFIG_PASSPHRASE (or _FILE) in the environment, empty if that is the
passphrase: nothing here prompts.`;

export type Mode = "foreground" | "detach" | "finish";

export type CliArgs =
  | { help: true }
  | { help: false; stack: string; mode: Mode; pollSeconds: number; keep: boolean; destroyOnFailure: boolean };

/** Throws a one-line message (without the usage text) for bad arguments. */
export function parseCliArgs(argv: string[]): CliArgs {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      stack: { type: "string", short: "s" },
      detach: { type: "boolean", default: false },
      finish: { type: "boolean", default: false },
      "poll-seconds": { type: "string" },
      keep: { type: "boolean", default: false },
      "destroy-on-failure": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) return { help: true };
  if (positionals.length) throw new Error(`unexpected argument ${positionals[0]}`);
  const stack = values.stack;
  if (!stack) throw new Error("--stack <name> is required");
  // Pulumi's own stack names (optionally org/project/stack); nothing that could read as an option
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_./-]*$/.test(stack)) throw new Error(`--stack ${stack}: not a stack name`);
  const poll = values["poll-seconds"] ?? String(DEFAULT_POLL_SECONDS);
  if (!/^\d+$/.test(poll) || +poll < 1 || +poll > 600) {
    throw new Error(`--poll-seconds ${poll}: a whole number of seconds from 1 to 600`);
  }
  if (values.detach && values.finish) {
    throw new Error("--detach and --finish together: --detach starts a workflow, --finish ends it; give one");
  }
  const mode: Mode = values.detach ? "detach" : values.finish ? "finish" : "foreground";
  if (values.keep && mode !== "foreground") {
    throw new Error(
      mode === "detach"
        ? "--keep with --detach: a detached box runs until a --finish destroys it; leave --keep out"
        : "--keep with --finish: a finish is there to destroy the box; to keep it, run no finish",
    );
  }
  if (values["destroy-on-failure"] && mode === "finish") {
    throw new Error("--destroy-on-failure with --finish: a finish runs no up; leave it out");
  }
  return {
    help: false,
    stack,
    mode,
    pollSeconds: Number(poll),
    keep: values.keep,
    destroyOnFailure: values["destroy-on-failure"],
  };
}

/** Single-quoted for the remote shell (ssh hands the command to the login shell on the box). */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * ssh that never prompts and reports only errors. Host keys are trusted on first use into a known_hosts file of
 * this run's own: each cycle makes a new box (new host keys) under the same name, which the user's known_hosts
 * would refuse as a changed key.
 */
export function sshArgs(target: string, knownHosts: string, remoteCommand: string): string[] {
  return [
    ...["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"],
    ...["-o", "StrictHostKeyChecking=accept-new", "-o", `UserKnownHostsFile=${knownHosts}`],
    ...["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"],
    "--",
    target,
    remoteCommand,
  ];
}

interface SshResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runSsh(args: string[], timeoutMs?: number): Promise<SshResult> {
  return new Promise((done, fail) => {
    const child = spawn("ssh", args, { stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", fail);
    child.on("close", (code) =>
      done({ code, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8").trim() }),
    );
  });
}

const sshFailure = (what: string, r: SshResult) =>
  new Error(`${what}: ssh exited ${r.code ?? "on a signal"}${r.stderr ? `: ${r.stderr.split("\n").pop()}` : ""}`);

/** Reading the box's files over ssh (see sshArgs). */
export function sshBox(knownHosts: string): Pick<CycleDeps, "readState" | "fetchFile"> {
  return {
    async readState(target) {
      // LC_ALL=C: cat's "No such file" in English whatever locale ssh forwards
      const r = await runSsh(sshArgs(target, knownHosts, `LC_ALL=C cat ${STATE_PATH}`), 60_000);
      if (r.code === 0) return r.stdout;
      // the workflow unit has not written it yet
      if (r.code === 1 && /No such file/.test(r.stderr)) return undefined;
      throw sshFailure(`reading ${STATE_PATH}`, r);
    },
    async fetchFile(target, path) {
      const r = await runSsh(sshArgs(target, knownHosts, `cat -- ${shellQuote(path)}`));
      if (r.code === 0) return r.stdout;
      throw sshFailure(`reading ${path}`, r);
    },
  };
}

/** True when the stack's secrets are encrypted with a passphrase (its stack file carries the salt). */
function usesPassphrase(stack: string): boolean {
  const file = join(ROOT, `Pulumi.${stack.split("/").pop()}.yaml`);
  return existsSync(file) && /^encryptionsalt:/m.test(readFileSync(file, "utf8"));
}

/**
 * Why a passphrase stack cannot be opened without a prompt, or undefined when it can. An empty
 * PULUMI_CONFIG_PASSPHRASE is a passphrase like any other (the CLI accepts it); only an unset one is missing.
 */
export function passphraseProblem(stack: string, env: NodeJS.ProcessEnv, encrypted: boolean): string | undefined {
  if (!encrypted || env.PULUMI_CONFIG_PASSPHRASE !== undefined || env.PULUMI_CONFIG_PASSPHRASE_FILE) return undefined;
  return (
    `stack ${stack} encrypts its secrets with a passphrase and the workflow cannot prompt for it. ` +
    `Fix: read -rs PULUMI_CONFIG_PASSPHRASE && export PULUMI_CONFIG_PASSPHRASE (or set PULUMI_CONFIG_PASSPHRASE_FILE)`
  );
}

/**
 * Feeds this process's SIGINT and SIGTERM into `interrupts`, once per interrupt (see watchInterrupts in
 * pulumi.mjs), and prints `tell(count)` for each. From the `quitAt`th one on the process exits at once with
 * EXIT_CODES.interrupted; the Pulumi CLI still running then gets a SIGTERM from execa, its second signal, and stops
 * at once too. Resolves to the function that stops listening.
 */
export async function feedInterrupts(
  interrupts: Interrupts,
  tell: (count: number) => string,
  quitAt = 3,
): Promise<() => void> {
  // @ts-expect-error: a plain ES module without types
  const wrapper = (await import("./pulumi.mjs")) as {
    watchInterrupts(onInterrupt: (i: { signal: string; count: number; fromTerminal: boolean }) => void): () => void;
  };
  return wrapper.watchInterrupts(({ signal, fromTerminal }) => {
    // Pulumi runs in this process group (execa), so a Ctrl-C from the terminal has reached it already
    const count = interrupts.interrupt({ signal, reachedPulumi: fromTerminal });
    console.error(`agentbox: ${signal === "SIGINT" ? "Ctrl-C" : signal}: ${tell(count)}`);
    if (count >= quitAt) process.exit(EXIT_CODES.interrupted);
  });
}

/** The Pulumi CLI that the `pulumi` npm package provides, as scripts/pulumi.mjs runs it. */
export async function pulumiCommand() {
  const { PulumiCommand } = await import("@pulumi/pulumi/automation/index.js");
  // @ts-expect-error: a plain CommonJS module without types
  const shim = (await import("pulumi/lib/resolve.js")) as { resolve(): Promise<string> };
  let bin: string;
  try {
    bin = await shim.resolve();
  } catch (e) {
    throw new Error(
      `the Pulumi CLI is not installed and could not be downloaded (${errorLine(e)}); npm run pulumi -- version shows why`,
    );
  }
  return PulumiCommand.get({ root: dirname(dirname(bin)) });
}

export async function openStack(stackName: string): Promise<Stack> {
  // @ts-expect-error: a plain ES module without types
  const wrapper = (await import("./pulumi.mjs")) as { defaultBackend(env: NodeJS.ProcessEnv): string | undefined };
  const envVars: Record<string, string> = {};
  const backend = wrapper.defaultBackend(process.env);
  if (backend) {
    envVars.PULUMI_BACKEND_URL = backend;
    console.error(
      `agentbox: using a local state backend (${backend}); set PULUMI_BACKEND_URL or run \`pulumi login\` to use another`,
    );
  }
  const problem = passphraseProblem(stackName, process.env, usesPassphrase(stackName));
  if (problem) throw new Error(problem);
  const { LocalWorkspace } = await import("@pulumi/pulumi/automation/index.js");
  return LocalWorkspace.selectStack({ stackName, workDir: ROOT }, { pulumiCommand: await pulumiCommand(), envVars });
}

function realDeps(stack: Stack, knownHosts: string, interrupts: Interrupts): CycleDeps {
  return {
    async up(onOutput, signal) {
      // a tailnet key left by a failed earlier up, expired, is replaced (scripts/spent-key.mjs)
      const replace = spentKeyReplacements(await stack.exportStack());
      for (const urn of replace)
        onOutput(`agentbox: the stack's tailnet key (${urn}) has expired: this up replaces it\n`);
      await stack.up({
        onOutput,
        onError: onOutput,
        signal: pulumiSignal(signal),
        ...(replace.length ? { replace } : {}),
      });
    },
    async outputs() {
      const outputs = await stack.outputs();
      return Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, v.value]));
    },
    async config() {
      const config = await stack.getAllConfig();
      return Object.fromEntries(Object.entries(config).map(([k, v]) => [k, v.value]));
    },
    async stackBox() {
      const found = boxInState(await stack.exportStack());
      if (!found.server || found.createdMs !== undefined) return found;
      // a state from a CLI that recorded no creation times: the latest update started no earlier than the
      // server's creation, so the deadline from it is late, never early
      const last = await stack.info(false);
      const at = last ? new Date(last.startTime).getTime() : Number.NaN;
      return Number.isNaN(at) ? found : { server: true, createdMs: at };
    },
    ...sshBox(knownHosts),
    async writeLocal(path, text) {
      const file = resolve(ROOT, path);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, text);
    },
    async destroy({ excludeProtected, onOutput, signal }) {
      await stack.destroy({ excludeProtected, onOutput, onError: onOutput, signal: pulumiSignal(signal) });
    },
    // Ctrl-C cuts the wait short; the cycle then destroys the box
    sleep: (ms) => delay(ms, undefined, { signal: interrupts.first }).catch(() => undefined),
    now: () => Date.now(),
    log: (line) => console.log(line),
  };
}

/** What each interrupt does, as the line printed for it says. */
export function interruptLine(mode: Mode, keep: boolean, stack: string, count: number): string {
  if (mode === "finish") {
    if (count === 1)
      return `stopping: Pulumi cancels a destroy that runs (it saves the state); ${finishCommand(stack)} finishes later. Ctrl-C again quits at once`;
    return `quitting at once; ${finishCommand(stack)} finishes later`;
  }
  const left = `stack ${stack} may still have its box; destroy it with: ${destroyCommand(stack)}`;
  if (count === 1) {
    return keep
      ? "ending the cycle: Pulumi cancels what it is doing, and the box is kept (--keep)"
      : "ending the cycle: Pulumi cancels what it is doing, then the box is destroyed (volume kept). Ctrl-C again cancels the destroy";
  }
  if (count === 2)
    return `cancelling what Pulumi is doing (it finishes the operations in flight); ${left}. Ctrl-C again quits at once`;
  return `quitting at once; ${left}`;
}

async function main(argv: string[]): Promise<number> {
  let args: CliArgs;
  try {
    args = parseCliArgs(argv);
  } catch (e) {
    console.error(`agentbox: ${errorLine(e)}\n\n${USAGE}`);
    return EXIT_CODES.error;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const { stack: stackName, mode, keep } = args;

  const interrupts = new Interrupts();
  // a finish stops at the first interrupt (there is no destroy of its own to run after it), so it quits at the second
  await feedInterrupts(interrupts, (count) => interruptLine(mode, keep, stackName, count), mode === "finish" ? 2 : 3);

  let stack: Stack;
  try {
    stack = await openStack(stackName);
  } catch (e) {
    console.error(`workflow ${stackName}: cycle error - ${errorLine(e)}`);
    return EXIT_CODES.error;
  }
  const knownHostsDir = mkdtempSync(join(tmpdir(), "agentbox-workflow-"));
  try {
    const deps = realDeps(stack, join(knownHostsDir, "known_hosts"), interrupts);
    const options = {
      stack: stackName,
      // when the box's state file names its run, the run's folder is workflow-runs/<stack>-<run> instead
      runDir: join("workflow-runs", runDirName(stackName, Date.now())),
      pollSeconds: args.pollSeconds,
      keep,
      destroyOnFailure: args.destroyOnFailure,
      interrupts,
    };
    const result =
      mode === "finish"
        ? await runFinish(deps, options)
        : mode === "detach"
          ? await runDetach(deps, options)
          : await runCycle(deps, options);
    return result.exitCode;
  } finally {
    rmSync(knownHostsDir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e);
      process.exit(EXIT_CODES.error);
    },
  );
}
