/**
 * One workflow cycle, independent of Pulumi and ssh so that it can be tested with fakes: create the box, wait for
 * the box to say that its workflow has ended, fetch the output, destroy the box (keeping protected resources).
 * scripts/workflow.ts wires the real Automation API and ssh into it.
 *
 * The box's side of the contract is its state file (STATE_PATH): KEY=VALUE lines with `state=` one of
 * pending | running | success | failure | timeout. Only the three end states mean the workflow is over: a quiet
 * agent, an unchanged output or a long run are never taken for "done".
 */
import { DEFAULT_READY_TIMEOUT_MINUTES } from "../components/config";

/** Written by the box's workflow unit; world-readable. */
export const STATE_PATH = "/var/lib/agentbox/workflow/state";

export const END_STATES = ["success", "failure", "timeout"] as const;
export type EndState = (typeof END_STATES)[number];

/**
 * What `npm run workflow` exits with: the workflow's own verdict, 3 when the cycle itself went wrong, 130
 * (128 + SIGINT, as a shell reports a Ctrl-C) when an interrupt ended it.
 */
export const EXIT_CODES = { success: 0, failure: 1, timeout: 2, error: 3, interrupted: 130 } as const;
export type Outcome = keyof typeof EXIT_CODES;

export const DEFAULT_POLL_SECONDS = 15;
/**
 * The box stops the workflow itself at its timeout; the local wait is a safety net that ends this much later
 * (the workflow may start a little after `up` returns, and the box needs a moment to write its verdict). With
 * agentbox:waitForReady false, `up` returns before the box has booted, and the wait adds the readiness timeout
 * (agentbox:readyTimeoutMinutes) for it. Until then a failed read of the state file is only logged: the box may
 * not be reachable yet (a stock box installs its packages and joins the tailnet first), or only for a while.
 */
export const DEFAULT_MARGIN_MINUTES = 10;
/** Attempts at fetching the output file once the workflow has ended. */
export const FETCH_ATTEMPTS = 3;
const HEARTBEAT_MS = 60_000;

export interface DestroyOptions {
  /** Always true: the persistent volume is `protect: true` and outlives the box. */
  excludeProtected: true;
  onOutput: (chunk: string) => void;
  /** Aborted by an interrupt while the destroy runs: Pulumi cancels it (see pulumiSignal). */
  signal: AbortSignal;
}

/** Why an interrupt signal was aborted. */
export interface InterruptReason {
  /** SIGINT or SIGTERM. */
  signal: string;
  /** A Ctrl-C in the terminal: it has reached the running Pulumi CLI (in this process group) already. */
  reachedPulumi: boolean;
}

/**
 * Interrupts (Ctrl-C, SIGTERM) as the cycle sees them: `first` is aborted at the first one, and each `next()`
 * signal at the next one after it was asked for.
 */
export class Interrupts {
  count = 0;
  readonly #first = new AbortController();
  #waiting = new Set<AbortController>();

  get first(): AbortSignal {
    return this.#first.signal;
  }

  next(): AbortSignal {
    const waiting = new AbortController();
    this.#waiting.add(waiting);
    return waiting.signal;
  }

  /** Records an interrupt and aborts the signals waiting for it; returns how many there have been. */
  interrupt(reason: InterruptReason = { signal: "SIGINT", reachedPulumi: false }): number {
    this.count++;
    if (!this.#first.signal.aborted) this.#first.abort(reason);
    for (const waiting of this.#waiting) waiting.abort(reason);
    this.#waiting.clear();
    return this.count;
  }
}

/**
 * The signal to hand an Automation API operation, which sends its Pulumi CLI a SIGINT when the signal aborts
 * (Pulumi then cancels: it finishes the operations in flight and saves the state): aborted with `signal`, unless
 * the interrupt was a Ctrl-C that reached the CLI from the terminal already, where a SIGINT more would be its
 * second one ("terminate now").
 */
export function pulumiSignal(signal: AbortSignal): AbortSignal {
  const forward = new AbortController();
  const pass = () => {
    if (!(signal.reason as Partial<InterruptReason> | undefined)?.reachedPulumi) forward.abort(signal.reason);
  };
  if (signal.aborted) pass();
  else signal.addEventListener("abort", pass, { once: true });
  return forward.signal;
}

export interface CycleDeps {
  /**
   * `pulumi up`; resolves once the box is ready, rejects when the update fails. `signal` is aborted at the first
   * interrupt: Pulumi cancels the update (see pulumiSignal).
   */
  up(onOutput: (chunk: string) => void, signal: AbortSignal): Promise<void>;
  /** The stack's outputs as plain values (secrets included). */
  outputs(): Promise<Record<string, unknown>>;
  /** The stack's configuration, `namespace:key` → value. */
  config(): Promise<Record<string, string>>;
  /** The state file's text, undefined when it does not exist yet; rejects when ssh fails. */
  readState(target: string): Promise<string | undefined>;
  /** A file's text on the box; rejects when ssh or the read fails. */
  fetchFile(target: string, path: string): Promise<string>;
  /** Writes a file on this machine, creating its folder. */
  writeLocal(path: string, text: string): Promise<void>;
  destroy(options: DestroyOptions): Promise<void>;
  sleep(ms: number): Promise<void>;
  /** Milliseconds since the epoch. */
  now(): number;
  log(line: string): void;
}

export interface CycleOptions {
  stack: string;
  /** Where the run's files go (output.jsonl, state); see runDirFor. */
  runDir: string;
  /** @default DEFAULT_POLL_SECONDS */
  pollSeconds?: number;
  /** Leave the box running at the end (and say how to destroy it later). @default false */
  keep?: boolean;
  /** Destroy even when `up` failed; by default a failed box is left for you to look at. @default false */
  destroyOnFailure?: boolean;
  /** @default DEFAULT_MARGIN_MINUTES */
  marginMinutes?: number;
  /**
   * The first interrupt cancels `up` or ends the wait, and the box is destroyed (unless `keep`); an interrupt
   * during that destroy cancels it, and the cycle says what is left.
   */
  interrupts?: Interrupts;
}

export interface CycleResult {
  outcome: Outcome;
  exitCode: (typeof EXIT_CODES)[Outcome];
  /** The one-line verdict, also the last line logged. */
  summary: string;
}

/**
 * The state file's KEY=VALUE lines, taken literally: no quotes removed, no expansion, values not trimmed (only a
 * trailing CR). Lines that are not `KEY=VALUE` with a shell-style key are ignored; a later key wins.
 */
export function parseState(text: string): Record<string, string> {
  const fields = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const match = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (match) fields.set(match[1]!, match[2]!);
  }
  // fromEntries makes own properties, so a key such as __proto__ stays an ordinary key
  return Object.fromEntries(fields);
}

export function isEndState(state: string | undefined): state is EndState {
  return (END_STATES as readonly string[]).includes(state ?? "");
}

/** `<stack>-<UTC time>` with the time as 20260101T120000Z (no colons: valid on every file system). */
export function runDirName(stack: string, nowMs: number): string {
  const stamp = new Date(nowMs)
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `${stack.replace(/[^A-Za-z0-9_.-]/g, "_")}-${stamp}`;
}

export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const pad = (n: number) => String(n).padStart(2, "0");
  if (h) return `${h}h${pad(m)}m${pad(s)}s`;
  if (m) return `${m}m${pad(s)}s`;
  return `${s}s`;
}

/** Splits streamed chunks into whole lines for `emit`; `flush` hands over a last unterminated line. */
export function lineSplitter(emit: (line: string) => void): { push(chunk: string): void; flush(): void } {
  let pending = "";
  return {
    push(chunk) {
      const parts = (pending + chunk).split(/\r?\n/);
      pending = parts.pop() ?? "";
      for (const part of parts) emit(part);
    },
    flush() {
      if (pending) emit(pending);
      pending = "";
    },
  };
}

export function destroyCommand(stack: string): string {
  return `npm run pulumi -- destroy --exclude-protected --stack ${stack}`;
}

/** Refuses, before anything is created, a stack that names no workflow. */
export function checkWorkflowConfigured(config: Record<string, string>, stack: string): void {
  const set = (key: string) => (config[`agentbox:${key}`] ?? "").trim() !== "";
  if (set("workflowPrompt") || set("workflowPromptFile")) return;
  throw new Error(
    `agentbox:workflowPrompt is not set for stack ${stack}, so it has no workflow to run. ` +
      `Fix: pulumi config set agentbox:workflowPrompt "Fix the failing tests and commit" --stack ${stack} ` +
      `(or pulumi config set agentbox:workflowPromptFile prompts/task.md --stack ${stack})`,
  );
}

/** `user@host` with nothing ssh could take for an option or a second argument. */
const SSH_TARGET = /^[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.:_-]*$/;

/** Where ssh reaches the box and how long the workflow may run, from the stack's outputs after `up`. */
export function boxFromOutputs(
  outputs: Record<string, unknown>,
  stack: string,
): { target: string; timeoutMinutes: number } {
  const workflow = outputs.workflow as { timeoutMinutes?: unknown } | undefined;
  const timeoutMinutes = workflow?.timeoutMinutes;
  if (typeof timeoutMinutes !== "number" || !Number.isFinite(timeoutMinutes) || timeoutMinutes <= 0) {
    throw new Error(
      `stack ${stack} has no workflow output ({ timeoutMinutes }) after up, so the box runs no workflow; ` +
        `is agentbox:workflowPrompt set and the program up to date?`,
    );
  }
  // sshTarget is the plain user@address; older stacks only have sshCommand ("ssh user@address")
  let target = outputs.sshTarget;
  if (target === undefined && typeof outputs.sshCommand === "string") {
    const [ssh, address, ...rest] = outputs.sshCommand.split(" ");
    if (ssh === "ssh" && rest.length === 0) target = address;
  }
  if (typeof target !== "string" || !SSH_TARGET.test(target)) {
    throw new Error(
      `stack ${stack} has no usable sshTarget output (user@address), got ${JSON.stringify(target ?? outputs.sshCommand)}`,
    );
  }
  return { target, timeoutMinutes };
}

/** The first line worth showing from an error (Pulumi's CommandError carries the whole CLI transcript). */
export function errorLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  for (const line of lines) {
    const error = /\berror: .*/i.exec(line);
    if (error) return error[0];
  }
  return lines[0] ?? "unknown error";
}

type Say = (line: string) => void;
type Streamed = (label: string, run: (onOutput: (chunk: string) => void) => Promise<void>) => Promise<void>;
type Settings = Required<Pick<CycleOptions, "pollSeconds" | "marginMinutes" | "interrupts">> & {
  stack: string;
  runDir: string;
};

/** How long the wait may last, and the words that say why. */
interface Bound {
  /** The box's own workflow timeout. */
  timeoutMinutes: number;
  minutes: number;
  /** e.g. "box timeout 60m + 10m margin" */
  made: string;
}

/** The wait's deadline: the box's workflow timeout, the margin, and the box's boot when `up` does not wait for it. */
export function waitBound(timeoutMinutes: number, marginMinutes: number, config: Record<string, string>): Bound {
  const made = `box timeout ${timeoutMinutes}m + ${marginMinutes}m margin`;
  if ((config["agentbox:waitForReady"] ?? "").trim() !== "false") {
    return { timeoutMinutes, minutes: timeoutMinutes + marginMinutes, made };
  }
  const ready = Number(config["agentbox:readyTimeoutMinutes"]);
  const boot = Number.isInteger(ready) && ready > 0 ? ready : DEFAULT_READY_TIMEOUT_MINUTES;
  return {
    timeoutMinutes,
    minutes: timeoutMinutes + marginMinutes + boot,
    made: `${made} + ${boot}m for the box to come up (agentbox:waitForReady is false)`,
  };
}

type WaitResult =
  | { kind: "ended"; state: EndState; fields: Record<string, string>; text: string }
  | { kind: "local-timeout"; fields: Record<string, string>; text?: string }
  | {
      kind: "unreachable";
      fields: Record<string, string>;
      text?: string;
      error: string;
      failures: number;
      forMs: number;
    }
  | { kind: "interrupted"; fields: Record<string, string>; text?: string };

async function waitForEnd(deps: CycleDeps, say: Say, target: string, bound: Bound, o: Settings): Promise<WaitResult> {
  const start = deps.now();
  const deadline = start + bound.minutes * 60_000;
  let fields: Record<string, string> = {};
  let text: string | undefined;
  let shown: string | undefined;
  let lastLine = start;
  let failures = 0;
  let failingSince = start;
  let lastError = "";
  for (;;) {
    if (o.interrupts.first.aborted) return { kind: "interrupted", fields, text };
    try {
      const read = await deps.readState(target);
      if (failures) say(`ssh to ${target} works again, after ${failures} failed ${failures === 1 ? "read" : "reads"}`);
      failures = 0;
      if (read !== undefined) {
        text = read;
        fields = parseState(read);
      }
    } catch (e) {
      if (failures === 0) failingSince = deps.now();
      failures++;
      lastError = errorLine(e);
      // not fatal before the deadline: the first failure, then one line a minute
      if (failures === 1 || deps.now() - lastLine >= HEARTBEAT_MS) {
        say(
          `ssh to ${target} failed (${failures} in a row; trying until the deadline, ${formatDuration(deadline - deps.now())} from now): ${lastError}`,
        );
        lastLine = deps.now();
      }
    }
    // a missing file or state line means the unit has not written it yet
    const state = fields.state || "pending";
    if (failures === 0 && state !== shown) {
      shown = state;
      say(`state ${state} (${formatDuration(deps.now() - start)} since up returned)`);
      lastLine = deps.now();
    }
    if (isEndState(state)) return { kind: "ended", state, fields, text: text ?? "" };
    if (deps.now() >= deadline) {
      if (failures === 0) return { kind: "local-timeout", fields, text };
      return { kind: "unreachable", fields, text, error: lastError, failures, forMs: deps.now() - failingSince };
    }
    if (failures === 0 && deps.now() - lastLine >= HEARTBEAT_MS) {
      say(`still ${state}, ${formatDuration(deps.now() - start)} elapsed (box timeout ${bound.timeoutMinutes}m)`);
      lastLine = deps.now();
    }
    await deps.sleep(o.pollSeconds * 1000);
  }
}

async function fetchOutput(
  deps: CycleDeps,
  say: Say,
  target: string,
  fields: Record<string, string>,
  localPath: string,
  attempts: number,
  pollMs: number,
): Promise<{ ok: true } | { ok: false; error: string }> {
  const remote = fields.output;
  if (!remote?.startsWith("/")) {
    return { ok: false, error: `the state file names no absolute output path (output=${remote ?? ""})` };
  }
  let error = "";
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      const text = await deps.fetchFile(target, remote);
      await deps.writeLocal(localPath, text);
      say(`output: ${localPath} (${Buffer.byteLength(text, "utf8")} bytes from ${remote})`);
      return { ok: true };
    } catch (e) {
      error = errorLine(e);
      say(`fetching ${remote} failed (attempt ${attempt}/${attempts}): ${error}`);
      if (attempt < attempts) await deps.sleep(pollMs);
    }
  }
  return { ok: false, error };
}

/**
 * up → wait for an end state → fetch the output → destroy (keeping protected resources). Never throws: every
 * problem becomes an outcome, logged, with the one-line summary as the last line.
 */
export async function runCycle(deps: CycleDeps, options: CycleOptions): Promise<CycleResult> {
  const settings: Settings = {
    stack: options.stack,
    runDir: options.runDir,
    pollSeconds: options.pollSeconds ?? DEFAULT_POLL_SECONDS,
    marginMinutes: options.marginMinutes ?? DEFAULT_MARGIN_MINUTES,
    interrupts: options.interrupts ?? new Interrupts(),
  };
  const { stack, interrupts } = settings;
  const say: Say = (line) => deps.log(`workflow ${stack}: ${line}`);
  const finish = (outcome: Outcome, summary: string): CycleResult => {
    const line = `workflow ${stack}: ${outcome === "error" ? "cycle error" : outcome} - ${summary}`;
    deps.log(line);
    return { outcome, exitCode: EXIT_CODES[outcome], summary: line };
  };
  const streamed: Streamed = async (label, run) => {
    const lines = lineSplitter((line) => deps.log(`  ${label} |${line ? ` ${line}` : ""}`));
    try {
      await run((chunk) => lines.push(chunk));
    } finally {
      lines.flush();
    }
  };

  const left = `stack ${stack} may still have its box. Destroy it with: ${destroyCommand(stack)}`;
  /** The destroy that ends the cycle after `outcome` (summary), and the verdict it comes to. */
  const destroyAndFinish = async (outcome: Outcome, summary: string): Promise<CycleResult> => {
    if (options.keep) {
      return finish(outcome, `${summary}; box kept (--keep). Destroy it with: ${destroyCommand(stack)}`);
    }
    if (outcome === "interrupted") say("destroying the box (the volume stays); Ctrl-C again cancels the destroy");
    const destroyed = await destroyBox(deps, streamed, say, interrupts.next());
    if (destroyed.ok) return finish(outcome, `${summary}; box destroyed (volume kept)`);
    const before = outcome === "interrupted" ? summary : `${outcome} (${summary})`;
    if (destroyed.interrupted) return finish("interrupted", `${before}, but the destroy was interrupted: ${left}`);
    return finish(
      "error",
      `${before}, but destroy failed (${destroyed.error}) and the box is still running. Run: ${destroyCommand(stack)}`,
    );
  };

  let config: Record<string, string>;
  try {
    config = await deps.config();
    checkWorkflowConfigured(config, stack);
  } catch (e) {
    if (interrupts.count) return finish("interrupted", "interrupted before anything was created");
    return finish("error", `${errorLine(e)} (nothing was created)`);
  }
  if (interrupts.count) return finish("interrupted", "interrupted before anything was created");

  say("pulumi up (returns once the box is ready; Ctrl-C cancels it, then destroys the box)");
  try {
    await streamed("up", (onOutput) => deps.up(onOutput, interrupts.first));
  } catch (e) {
    logError(deps, "up", e);
    // the cycle promises to destroy what it creates when it is interrupted, with or without --destroy-on-failure
    if (interrupts.count) return destroyAndFinish("interrupted", "interrupted during pulumi up");
    const failed = `pulumi up failed: ${errorLine(e)}`;
    if (!options.destroyOnFailure) {
      return finish(
        "error",
        `${failed}; whatever it created is left for you to look at. Destroy it with: ${destroyCommand(stack)}`,
      );
    }
    const destroyed = await destroyBox(deps, streamed, say, interrupts.next());
    if (destroyed.ok) return finish("error", `${failed}; destroyed what it had created (volume kept)`);
    if (destroyed.interrupted) return finish("interrupted", `${failed}; the destroy was interrupted: ${left}`);
    return finish("error", `${failed}; destroy failed too (${destroyed.error}). Run: ${destroyCommand(stack)}`);
  }
  if (interrupts.count) return destroyAndFinish("interrupted", "interrupted during pulumi up");

  let outcome: Outcome;
  let summary: string;
  try {
    ({ outcome, summary } = await watchAndFetch(deps, say, settings, config));
  } catch (e) {
    outcome = interrupts.count ? "interrupted" : "error";
    summary = interrupts.count ? `interrupted (${errorLine(e)})` : errorLine(e);
  }
  // whatever the wait and the fetch came to, the box goes (a forgotten box is billed by the hour)
  return destroyAndFinish(outcome, summary);
}

function logError(deps: CycleDeps, label: string, error: unknown): void {
  for (const line of (error instanceof Error ? error.message : String(error)).split("\n")) {
    deps.log(`  ${label} |${line ? ` ${line}` : ""}`);
  }
}

async function watchAndFetch(
  deps: CycleDeps,
  say: Say,
  s: Settings,
  config: Record<string, string>,
): Promise<{ outcome: Outcome; summary: string }> {
  const { target, timeoutMinutes } = boxFromOutputs(await deps.outputs(), s.stack);
  const bound = waitBound(timeoutMinutes, s.marginMinutes, config);
  say(
    `waiting for the workflow on ${target}, polling every ${s.pollSeconds}s, for at most ${bound.minutes}m (${bound.made})`,
  );
  const waited = await waitForEnd(deps, say, target, bound, s);
  const outputPath = `${s.runDir}/output.jsonl`;
  if (waited.text !== undefined) await deps.writeLocal(`${s.runDir}/state`, waited.text);
  const last = waited.fields.state || "pending";
  switch (waited.kind) {
    case "ended": {
      const { fields } = waited;
      const seconds = (key: string) => (/^\d+$/.test(fields[key] ?? "") ? Number(fields[key]) : undefined);
      const started = seconds("started");
      const ended = seconds("ended");
      const ran =
        started !== undefined && ended !== undefined ? `, ran ${formatDuration((ended - started) * 1000)}` : "";
      const verdict = `claude exit ${fields.exit ?? "?"}${ran}`;
      const fetched = await fetchOutput(deps, say, target, fields, outputPath, FETCH_ATTEMPTS, s.pollSeconds * 1000);
      if (!fetched.ok) {
        return {
          outcome: "error",
          summary: `the workflow ended (${waited.state}, ${verdict}) but its output could not be fetched: ${fetched.error}`,
        };
      }
      return { outcome: waited.state, summary: `${verdict}; output in ${outputPath}` };
    }
    case "local-timeout": {
      // best effort: whatever the agent wrote so far is worth keeping before the box goes
      const fetched = await fetchOutput(deps, say, target, waited.fields, outputPath, 1, 0);
      return {
        outcome: "timeout",
        summary:
          `no end state from the box within ${bound.minutes}m (${bound.made}), ` +
          `last state ${last}; ${fetched.ok ? `partial output in ${outputPath}` : "no output fetched"}`,
      };
    }
    case "unreachable":
      return {
        outcome: "error",
        summary:
          `no end state from the box within ${bound.minutes}m (${bound.made}), and ssh to it was failing at the deadline ` +
          `(${waited.failures} reads in a row over ${formatDuration(waited.forMs)}: ${waited.error}), last state ${last}`,
      };
    case "interrupted":
      return { outcome: "interrupted", summary: `interrupted while the workflow was ${last}` };
    default: {
      const never: never = waited;
      throw new Error(`unexpected wait result ${JSON.stringify(never)}`);
    }
  }
}

async function destroyBox(
  deps: CycleDeps,
  streamed: Streamed,
  say: Say,
  signal: AbortSignal,
): Promise<{ ok: true } | { ok: false; interrupted: boolean; error: string }> {
  say("pulumi destroy --exclude-protected (the volume stays)");
  try {
    await streamed("destroy", (onOutput) => deps.destroy({ excludeProtected: true, onOutput, signal }));
    return { ok: true };
  } catch (e) {
    logError(deps, "destroy", e);
    return { ok: false, interrupted: signal.aborted, error: errorLine(e) };
  }
}
