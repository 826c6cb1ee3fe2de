/**
 * One workflow cycle, independent of Pulumi and ssh so that it can be tested with fakes: create the box, wait for
 * the box to say that its workflow has ended, fetch the output, destroy the box (keeping protected resources).
 * scripts/workflow.ts wires the real Automation API and ssh into it.
 *
 * The same steps make three commands: the whole cycle in the foreground (runCycle), a start that returns once the
 * workflow runs (runDetach), and a finish that can run any time, anywhere, any number of times (runFinish). What a
 * finish needs to know lives in the stack and on the box, never in the process that started the box: whether a
 * server exists and when it was created (the stack's state), and the workflow's start and end (the box's state
 * file), so a finish from another machine, or after the starting process was killed, comes to the same verdict.
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
 * What `npm run workflow` exits with: the workflow's own verdict (0, 1, 2), 3 when the cycle itself went wrong,
 * 130 (128 + SIGINT, as a shell reports a Ctrl-C) when an interrupt ended it. The others tell a script (a
 * scheduled finish) what to do next: 10 and 11 "try again later", 4 "the output is not here".
 */
export const EXIT_CODES = {
  success: 0,
  failure: 1,
  timeout: 2,
  error: 3,
  /** The box was destroyed without its output: it did not answer past its deadline. */
  unreachable: 4,
  /** --finish: the workflow has not ended and its deadline has not passed; nothing changed. */
  running: 10,
  /** Another Pulumi operation (another finish, an up, a destroy) holds the stack's lock; this run changed nothing. */
  locked: 11,
  /** --detach: the workflow has started (or already ended); a --finish takes it from there. */
  detached: 0,
  /** --finish: the stack has no box (an earlier finish or a destroy took it down); nothing to do. */
  gone: 0,
  interrupted: 130,
} as const;
export type Outcome = keyof typeof EXIT_CODES;

/** How each outcome reads in the last line. */
const OUTCOME_WORDS: Record<Outcome, string> = {
  success: "success",
  failure: "failure",
  timeout: "timeout",
  error: "cycle error",
  unreachable: "unreachable",
  running: "still running",
  locked: "locked",
  detached: "detached",
  gone: "nothing to finish",
  interrupted: "interrupted",
};

export const DEFAULT_POLL_SECONDS = 15;
/**
 * The grace after the workflow's own timeout. The box stops the workflow itself at its timeout; the deadline is a
 * safety net that ends this much later (the box needs a moment to write its verdict, and the workflow may start a
 * little after `up` returns). Until then a failed read of the state file is only logged: the box may not be
 * reachable yet (a stock box installs its packages and joins the tailnet first), or only for a while, and this
 * machine may have been asleep or offline.
 */
export const DEFAULT_MARGIN_MINUTES = 10;
/** Attempts at fetching the output file once the workflow has ended. */
export const FETCH_ATTEMPTS = 3;
/**
 * Reads of the state file in a row that must fail before a box past its deadline counts as unreachable (and is
 * destroyed without its output): a machine waking from sleep takes a moment to get its network back.
 */
export const LAST_TRIES = 3;
const HEARTBEAT_MS = 60_000;

/** The resource types that are "the box" in a stack's state (see also scripts/spent-key.mjs). */
export const SERVER_TYPES: readonly string[] = ["hcloud:index/server:Server", "digitalocean:index/droplet:Droplet"];

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

/** What the stack's state says of the box. */
export interface StackBox {
  /** A server (or droplet) is in the state: the box exists, or a destroy of it has not finished. */
  server: boolean;
  /** When the server was created, ms since the epoch, when the state says so. */
  createdMs?: number;
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
  /**
   * The box as the stack's state has it (the outputs outlive a destroy that keeps protected resources, so they
   * cannot say whether a box exists). Only a finish asks: the other modes have just run `up`.
   */
  stackBox(): Promise<StackBox>;
  /** The state file's text, undefined when it does not exist yet; rejects when ssh fails. */
  readState(target: string): Promise<string | undefined>;
  /** A file's text on the box; rejects when ssh or the read fails. */
  fetchFile(target: string, path: string): Promise<string>;
  /** Writes a file on this machine, creating its folder. */
  writeLocal(path: string, text: string): Promise<void>;
  /** Rejects with a ConcurrentUpdateError (see isLockError) when another operation holds the stack's lock. */
  destroy(options: DestroyOptions): Promise<void>;
  sleep(ms: number): Promise<void>;
  /** Milliseconds since the epoch: wall-clock time, which jumps forward when this machine wakes from sleep. */
  now(): number;
  log(line: string): void;
}

export interface CycleOptions {
  stack: string;
  /** Where the run's files go (output.jsonl, state) when the box's state file names no run; see runDirFor. */
  runDir: string;
  /** The folder of every run's files. @default "workflow-runs" */
  runsDir?: string;
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
   * during that destroy cancels it, and the cycle says what is left. In a finish, the first interrupt cancels
   * whatever runs (a destroy included) and nothing more is done.
   */
  interrupts?: Interrupts;
}

export type FinishOptions = Omit<CycleOptions, "keep" | "destroyOnFailure">;

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

const safeStack = (stack: string) => stack.replace(/[^A-Za-z0-9_.-]/g, "_");

/** `<stack>-<UTC time>` with the time as 20260101T120000Z (no colons: valid on every file system). */
export function runDirName(stack: string, nowMs: number): string {
  const stamp = new Date(nowMs)
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `${safeStack(stack)}-${stamp}`;
}

/** The box names its run by its UTC start, as runDirName writes times. */
const RUN_NAME = /^\d{8}T\d{6}Z$/;

/**
 * Where a run's files go: `<runsDir>/<stack>-<run>` with the run the box named (run= in its state file), so that
 * every finish of the same run, from wherever, writes the same folder; `fallback` when the box named none.
 */
export function runDirFor(stack: string, fields: Record<string, string>, fallback: string, runsDir = "workflow-runs") {
  const run = fields.run ?? "";
  return RUN_NAME.test(run) ? `${runsDir}/${safeStack(stack)}-${run}` : fallback;
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

/** 2026-01-01 12:00:00 UTC */
export function formatTime(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace("T", " ")} UTC`;
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

export function finishCommand(stack: string): string {
  return `npm run workflow -- --stack ${stack} --finish`;
}

export function detachCommand(stack: string): string {
  return `npm run workflow -- --stack ${stack} --detach`;
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

export interface BoxOutputs {
  target: string;
  timeoutMinutes: number;
  /** The stack has a volume (the agent's home, with the workflow's runs), which a destroy keeps. */
  volume: boolean;
}

/** Where ssh reaches the box and how long the workflow may run, from the stack's outputs after `up`. */
export function boxFromOutputs(outputs: Record<string, unknown>, stack: string): BoxOutputs {
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
  const volume = typeof outputs.volumeId === "string" && outputs.volumeId !== "";
  return { target, timeoutMinutes, volume };
}

/**
 * The box in a stack's exported state (`pulumi stack export`): whether a server is there, and when the engine
 * recorded its creation (each resource's `created`, which the Pulumi CLI has written since early 2023).
 */
export function boxInState(exported: unknown): StackBox {
  const doc = (typeof exported === "string" ? JSON.parse(exported || "{}") : (exported ?? {})) as {
    deployment?: { resources?: Array<{ type?: string; created?: string }> };
  };
  const server = (doc.deployment?.resources ?? []).find((r) => SERVER_TYPES.includes(r.type ?? ""));
  if (!server) return { server: false };
  const created = Date.parse(server.created ?? "");
  return Number.isNaN(created) ? { server: true } : { server: true, createdMs: created };
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

/**
 * Another operation holds the stack's lock: the Automation API's ConcurrentUpdateError, from a self-managed
 * backend ("the stack is currently locked by 1 lock(s)") or Pulumi Cloud ("Another update is currently in
 * progress"). Nothing was changed by the operation that got it.
 */
export function isLockError(error: unknown): boolean {
  if (error instanceof Error && error.name === "ConcurrentUpdateError") return true;
  const text = error instanceof Error ? error.message : String(error);
  return /currently locked|Another update is currently in progress/i.test(text);
}

type Say = (line: string) => void;
type Streamed = (label: string, run: (onOutput: (chunk: string) => void) => Promise<void>) => Promise<void>;

/** How long the wait may last, from when, and the words that say why. */
interface Bound {
  /** The box's own workflow timeout. */
  timeoutMinutes: number;
  minutes: number;
  /** e.g. "box timeout 60m + 10m margin" */
  made: string;
  /** The moment the minutes count from, and what it was. */
  fromMs?: number;
  from?: string;
}

const deadlineOf = (bound: Bound & { fromMs: number }) => bound.fromMs + bound.minutes * 60_000;

/** The box's readiness timeout: how long after its creation it may take to be ready and start the workflow. */
function readyMinutes(config: Record<string, string>): number {
  const ready = Number(config["agentbox:readyTimeoutMinutes"]);
  return Number.isInteger(ready) && ready > 0 ? ready : DEFAULT_READY_TIMEOUT_MINUTES;
}

const waitsForReady = (config: Record<string, string>) => (config["agentbox:waitForReady"] ?? "").trim() !== "false";

/**
 * The wait's deadline, from when `up` returns: the box's workflow timeout, the margin, and the box's boot when
 * `up` does not wait for it.
 */
export function waitBound(timeoutMinutes: number, marginMinutes: number, config: Record<string, string>): Bound {
  const made = `box timeout ${timeoutMinutes}m + ${marginMinutes}m margin`;
  if (waitsForReady(config)) return { timeoutMinutes, minutes: timeoutMinutes + marginMinutes, made };
  const boot = readyMinutes(config);
  return {
    timeoutMinutes,
    minutes: timeoutMinutes + marginMinutes + boot,
    made: `${made} + ${boot}m for the box to come up (agentbox:waitForReady is false)`,
  };
}

/**
 * The deadline that holds wherever it is computed: from the workflow's start as the box recorded it (started=,
 * the box's clock, which NTP keeps right); without it, from the server's creation in the stack's state, plus the
 * readiness timeout within which a box starts its workflow. Undefined when neither is known.
 */
export function workflowDeadline(
  fields: Record<string, string>,
  createdMs: number | undefined,
  timeoutMinutes: number,
  marginMinutes: number,
  config: Record<string, string>,
): (Bound & { fromMs: number; from: string }) | undefined {
  const made = `box timeout ${timeoutMinutes}m + ${marginMinutes}m margin`;
  const started = /^\d+$/.test(fields.started ?? "") ? Number(fields.started) * 1000 : undefined;
  if (started !== undefined) {
    return {
      timeoutMinutes,
      minutes: timeoutMinutes + marginMinutes,
      made,
      fromMs: started,
      from: `the workflow's start (${formatTime(started)}, started= on the box)`,
    };
  }
  if (createdMs === undefined) return undefined;
  const boot = readyMinutes(config);
  return {
    timeoutMinutes,
    minutes: timeoutMinutes + marginMinutes + boot,
    made: `${made} + ${boot}m for the box to start it (agentbox:readyTimeoutMinutes)`,
    fromMs: createdMs,
    from: `the server's creation (${formatTime(createdMs)}, in the stack's state)`,
  };
}

/** Where an output that was not fetched is, and how to get it. */
function outputWhereabouts(stack: string, box: BoxOutputs, fields: Record<string, string>) {
  if (!box.volume) {
    return { short: "its output was not fetched and went with the box (the stack has no volume)", how: undefined };
  }
  const known = RUN_NAME.test(fields.run ?? "");
  const run = known ? fields.run! : "<run>";
  const where = known ? `~/agentbox-runs/${run}/` : "~/agentbox-runs/<run>/ (the newest run there)";
  return {
    short: `its output was not fetched: it stays on the volume, in the agent's home: ${where}`,
    how:
      `the output stays on the volume, in the agent's home: ${known ? `${where}output.jsonl` : where}. To get it, bring a box back ` +
      `on the volume with npm run up -- --stack ${stack} (a new box runs the workflow again: remove ` +
      `agentbox:workflowPrompt or workflowPromptFile first if you only want the output), then ` +
      `scp ${box.target.split("@")[0]}@<box>:agentbox-runs/${run}/output.jsonl . ; or attach the volume to a ` +
      `server of your own in the cloud console`,
  };
}

type WaitResult =
  | { kind: "ended"; state: EndState; fields: Record<string, string>; text: string }
  /** Only when waiting for the start: the box says the workflow runs. */
  | { kind: "started"; fields: Record<string, string>; text: string }
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

/** What every mode shares: the deps, the settings, and how it talks. */
interface Ctx {
  deps: CycleDeps;
  stack: string;
  runDir: string;
  runsDir: string;
  pollSeconds: number;
  marginMinutes: number;
  interrupts: Interrupts;
  /** What deals with what an interrupted destroy left, e.g. "Destroy it with: <command>". */
  left: string;
  say: Say;
  streamed: Streamed;
  finish(outcome: Outcome, summary: string): CycleResult;
}

function context(
  deps: CycleDeps,
  options: FinishOptions,
  left = `Destroy it with: ${destroyCommand(options.stack)}`,
): Ctx {
  const stack = options.stack;
  const ctx: Ctx = {
    left,
    deps,
    stack,
    runDir: options.runDir,
    runsDir: options.runsDir ?? "workflow-runs",
    pollSeconds: options.pollSeconds ?? DEFAULT_POLL_SECONDS,
    marginMinutes: options.marginMinutes ?? DEFAULT_MARGIN_MINUTES,
    interrupts: options.interrupts ?? new Interrupts(),
    say: (line) => deps.log(`workflow ${stack}: ${line}`),
    async streamed(label, run) {
      const lines = lineSplitter((line) => deps.log(`  ${label} |${line ? ` ${line}` : ""}`));
      try {
        await run((chunk) => lines.push(chunk));
      } finally {
        lines.flush();
      }
    },
    finish(outcome, summary) {
      const line = `workflow ${stack}: ${OUTCOME_WORDS[outcome]} - ${summary}`;
      deps.log(line);
      return { outcome, exitCode: EXIT_CODES[outcome], summary: line };
    },
  };
  return ctx;
}

/**
 * Polls the state file until the box says the workflow ended (or, with `until: "start"`, that it runs), the
 * deadline passes, or an interrupt. Wall-clock time: a machine that slept past the deadline finds it passed at
 * its next poll. Failed reads are retried until the deadline; past it, LAST_TRIES in a row make the box
 * unreachable. Waiting for the end, the deadline moves to the one the box's started= gives, once it is read.
 */
async function watch(
  ctx: Ctx,
  target: string,
  initial: Bound & { fromMs: number },
  until: "end" | "start",
  config: Record<string, string>,
): Promise<{ result: WaitResult; bound: Bound & { fromMs: number } }> {
  const { deps, say } = ctx;
  const start = deps.now();
  let bound = initial;
  let deadline = deadlineOf(bound);
  let fields: Record<string, string> = {};
  let text: string | undefined;
  let shown: string | undefined;
  let lastLine = start;
  let failures = 0;
  let failingSince = start;
  let lastError = "";
  const done = (result: WaitResult) => ({ result, bound });
  for (;;) {
    if (ctx.interrupts.first.aborted) return done({ kind: "interrupted", fields, text });
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
        const left = deadline - deps.now();
        say(
          `ssh to ${target} failed (${failures} in a row; ` +
            (left > 0
              ? `trying until the deadline, ${formatDuration(left)} from now): ${lastError}`
              : `the deadline has passed: ${LAST_TRIES} in a row and the box counts as unreachable): ${lastError}`),
        );
        lastLine = deps.now();
      }
    }
    if (until === "end" && bound.from === undefined) {
      const fromBox = workflowDeadline(fields, undefined, bound.timeoutMinutes, ctx.marginMinutes, config);
      if (fromBox) {
        bound = fromBox;
        deadline = deadlineOf(bound);
        say(`deadline ${formatTime(deadline)}: ${bound.from} + ${bound.minutes}m (${bound.made})`);
      }
    }
    // a missing file or state line means the unit has not written it yet
    const state = fields.state || "pending";
    if (failures === 0 && state !== shown) {
      shown = state;
      say(`state ${state} (${formatDuration(deps.now() - start)} since up returned)`);
      lastLine = deps.now();
    }
    if (isEndState(state)) return done({ kind: "ended", state, fields, text: text ?? "" });
    if (until === "start" && state === "running") return done({ kind: "started", fields, text: text ?? "" });
    if (deps.now() >= deadline) {
      if (failures === 0) return done({ kind: "local-timeout", fields, text });
      if (failures >= LAST_TRIES) {
        return done({
          kind: "unreachable",
          fields,
          text,
          error: lastError,
          failures,
          forMs: deps.now() - failingSince,
        });
      }
    }
    if (failures === 0 && deps.now() - lastLine >= HEARTBEAT_MS) {
      say(`still ${state}, ${formatDuration(deps.now() - start)} elapsed (box timeout ${bound.timeoutMinutes}m)`);
      lastLine = deps.now();
    }
    await deps.sleep(ctx.pollSeconds * 1000);
  }
}

async function fetchOutput(
  ctx: Ctx,
  target: string,
  fields: Record<string, string>,
  localPath: string,
  attempts: number,
): Promise<{ ok: true } | { ok: false; error: string }> {
  const { deps, say } = ctx;
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
      if (attempt < attempts) await deps.sleep(ctx.pollSeconds * 1000);
    }
  }
  return { ok: false, error };
}

/** The verdict on a wait that is over: the output fetched (when it can be) and what to say. */
interface Concluded {
  outcome: Outcome;
  summary: string;
  /** Said after "box destroyed" once the destroy succeeded. */
  afterDestroy?: string;
}

/** Saves what the box said and fetches the output of a wait that is over; the box is still there. */
async function conclude(ctx: Ctx, box: BoxOutputs, waited: WaitResult, bound: Bound): Promise<Concluded> {
  const { deps, say } = ctx;
  const runDir = runDirFor(ctx.stack, waited.fields, ctx.runDir, ctx.runsDir);
  const outputPath = `${runDir}/output.jsonl`;
  if (waited.text !== undefined) await deps.writeLocal(`${runDir}/state`, waited.text);
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
      const fetched = await fetchOutput(ctx, box.target, fields, outputPath, FETCH_ATTEMPTS);
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
      const fetched = await fetchOutput(ctx, box.target, waited.fields, outputPath, 1);
      return {
        outcome: "timeout",
        summary:
          `no end state from the box within ${bound.minutes}m (${bound.made}), ` +
          `last state ${last}; ${fetched.ok ? `partial output in ${outputPath}` : "no output fetched"}`,
      };
    }
    case "unreachable": {
      const where = outputWhereabouts(ctx.stack, box, waited.fields);
      if (where.how) say(where.how);
      return {
        outcome: "unreachable",
        summary:
          `no end state from the box within ${bound.minutes}m (${bound.made}), and ssh to it was failing at the deadline ` +
          `(${waited.failures} reads in a row over ${formatDuration(waited.forMs)}: ${waited.error}), last state ${last}`,
        afterDestroy: `; ${where.short}`,
      };
    }
    case "interrupted":
      return { outcome: "interrupted", summary: `interrupted while the workflow was ${last}` };
    case "started":
      // a wait for the end never stops at the start
      return { outcome: "error", summary: `the wait stopped at the workflow's start (last state ${last})` };
    default: {
      const never: never = waited;
      throw new Error(`unexpected wait result ${JSON.stringify(never)}`);
    }
  }
}

function lockedSummary(stack: string, before: string): string {
  return (
    `${before}another Pulumi operation holds stack ${stack}'s lock (another finish, an up or a destroy), so this ` +
    `run changed nothing. Once it is done, ${finishCommand(stack)} says what is left`
  );
}

/**
 * The destroy that ends a cycle after `c` (the verdict so far), and the verdict it comes to. `signal` cancels it:
 * the next interrupt in the foreground (the first one started this destroy), the first one in a finish.
 */
async function destroyAndFinish(ctx: Ctx, c: Concluded, signal: AbortSignal, keep = false): Promise<CycleResult> {
  const { stack, say } = ctx;
  const { outcome, summary } = c;
  if (keep) return ctx.finish(outcome, `${summary}; box kept (--keep). Destroy it with: ${destroyCommand(stack)}`);
  if (outcome === "interrupted") say("destroying the box (the volume stays); Ctrl-C again cancels the destroy");
  const destroyed = await destroyBox(ctx, signal);
  if (destroyed.ok) return ctx.finish(outcome, `${summary}; box destroyed (volume kept)${c.afterDestroy ?? ""}`);
  const before = outcome === "interrupted" ? summary : `${outcome} (${summary})`;
  if (destroyed.locked) return ctx.finish("locked", lockedSummary(stack, `${before}, but `));
  if (destroyed.interrupted) {
    return ctx.finish(
      "interrupted",
      `${before}, but the destroy was interrupted: stack ${stack} may still have its box. ` + ctx.left,
    );
  }
  return ctx.finish(
    "error",
    `${before}, but destroy failed (${destroyed.error}) and the box is still running. Run: ${destroyCommand(stack)}`,
  );
}

async function destroyBox(
  ctx: Ctx,
  signal: AbortSignal,
): Promise<{ ok: true } | { ok: false; interrupted: boolean; locked: boolean; error: string }> {
  ctx.say("pulumi destroy --exclude-protected (the volume stays)");
  try {
    await ctx.streamed("destroy", (onOutput) => ctx.deps.destroy({ excludeProtected: true, onOutput, signal }));
    return { ok: true };
  } catch (e) {
    logError(ctx.deps, "destroy", e);
    return { ok: false, interrupted: signal.aborted, locked: isLockError(e), error: errorLine(e) };
  }
}

function logError(deps: CycleDeps, label: string, error: unknown): void {
  for (const line of (error instanceof Error ? error.message : String(error)).split("\n")) {
    deps.log(`  ${label} |${line ? ` ${line}` : ""}`);
  }
}

/**
 * The start that the foreground and a detached run share: the stack must name a workflow, then `pulumi up`.
 * Resolves to the config and when `up` returned, or to the run's verdict when it went no further.
 */
async function createBox(
  ctx: Ctx,
  options: CycleOptions,
  detached: boolean,
): Promise<{ config: Record<string, string> } | { result: CycleResult }> {
  const { deps, stack, interrupts, say } = ctx;
  const done = (outcome: Outcome, summary: string) => ({ result: ctx.finish(outcome, summary) });
  const left = `stack ${stack} may still have its box. Destroy it with: ${destroyCommand(stack)}`;
  let config: Record<string, string>;
  try {
    config = await deps.config();
    checkWorkflowConfigured(config, stack);
  } catch (e) {
    if (interrupts.count) return done("interrupted", "interrupted before anything was created");
    return done("error", `${errorLine(e)} (nothing was created)`);
  }
  if (interrupts.count) return done("interrupted", "interrupted before anything was created");

  say(
    detached
      ? "pulumi up (returns once the box is ready; Ctrl-C cancels it, then destroys the box); then this waits for the workflow to start, and leaves it running"
      : "pulumi up (returns once the box is ready; Ctrl-C cancels it, then destroys the box)",
  );
  try {
    await ctx.streamed("up", (onOutput) => deps.up(onOutput, interrupts.first));
  } catch (e) {
    logError(deps, "up", e);
    // the cycle promises to destroy what it creates when it is interrupted, with or without --destroy-on-failure
    if (interrupts.count) {
      return { result: await destroyAndFinish(ctx, interruptedUp, interrupts.next(), options.keep) };
    }
    // someone else's operation: nothing of this run's to destroy, and theirs is not this run's to touch
    if (isLockError(e)) return done("locked", lockedSummary(stack, "pulumi up did not start: "));
    const failed = `pulumi up failed: ${errorLine(e)}`;
    if (!options.destroyOnFailure) {
      return done(
        "error",
        `${failed}; whatever it created is left for you to look at. Destroy it with: ${destroyCommand(stack)}`,
      );
    }
    const destroyed = await destroyBox(ctx, interrupts.next());
    if (destroyed.ok) return done("error", `${failed}; destroyed what it had created (volume kept)`);
    if (destroyed.interrupted) return done("interrupted", `${failed}; the destroy was interrupted: ${left}`);
    return done("error", `${failed}; destroy failed too (${destroyed.error}). Run: ${destroyCommand(stack)}`);
  }
  if (interrupts.count) {
    return { result: await destroyAndFinish(ctx, interruptedUp, interrupts.next(), options.keep) };
  }
  return { config };
}

const interruptedUp: Concluded = { outcome: "interrupted", summary: "interrupted during pulumi up" };

/**
 * up → wait for an end state → fetch the output → destroy (keeping protected resources). Never throws: every
 * problem becomes an outcome, logged, with the one-line summary as the last line.
 */
export async function runCycle(deps: CycleDeps, options: CycleOptions): Promise<CycleResult> {
  const ctx = context(deps, options);
  const created = await createBox(ctx, options, false);
  if ("result" in created) return created.result;
  const { interrupts } = ctx;
  let concluded: Concluded;
  try {
    concluded = await watchAndFetch(ctx, created.config);
  } catch (e) {
    concluded = interrupts.count
      ? { outcome: "interrupted", summary: `interrupted (${errorLine(e)})` }
      : { outcome: "error", summary: errorLine(e) };
  }
  // whatever the wait and the fetch came to, the box goes (a forgotten box is billed by the hour)
  return destroyAndFinish(ctx, concluded, interrupts.next(), options.keep);
}

async function watchAndFetch(ctx: Ctx, config: Record<string, string>): Promise<Concluded> {
  const box = boxFromOutputs(await ctx.deps.outputs(), ctx.stack);
  const bound = { ...waitBound(box.timeoutMinutes, ctx.marginMinutes, config), fromMs: ctx.deps.now() };
  ctx.say(
    `waiting for the workflow on ${box.target}, polling every ${ctx.pollSeconds}s, for at most ${bound.minutes}m (${bound.made})`,
  );
  const waited = await watch(ctx, box.target, bound, "end", config);
  return conclude(ctx, box, waited.result, waited.bound);
}

/**
 * up → wait until the box says its workflow runs (or has ended) → exit, printing how to finish. The box is left
 * to run its workflow: a later runFinish, from anywhere, fetches the output and destroys it. An interrupt before
 * the workflow was seen to start destroys the box, as in the foreground.
 */
export async function runDetach(deps: CycleDeps, options: CycleOptions): Promise<CycleResult> {
  const ctx = context(deps, options);
  const { stack, interrupts, say } = ctx;
  const created = await createBox(ctx, options, true);
  if ("result" in created) return created.result;
  const { config } = created;
  let box: BoxOutputs;
  try {
    box = boxFromOutputs(await deps.outputs(), stack);
  } catch (e) {
    const c: Concluded = interrupts.count
      ? { outcome: "interrupted", summary: `interrupted (${errorLine(e)})` }
      : { outcome: "error", summary: errorLine(e) };
    return destroyAndFinish(ctx, c, interrupts.next(), options.keep);
  }
  // the workflow starts once the box is ready, which up waits for unless agentbox:waitForReady is false
  const boot = waitsForReady(config) ? 0 : readyMinutes(config);
  const bound = {
    timeoutMinutes: box.timeoutMinutes,
    minutes: ctx.marginMinutes + boot,
    made: `${ctx.marginMinutes}m margin${boot ? ` + ${boot}m for the box to come up (agentbox:waitForReady is false)` : ""}`,
    fromMs: deps.now(),
  };
  say(`waiting for the workflow on ${box.target} to start, for at most ${bound.minutes}m (${bound.made})`);
  const { result } = await watch(ctx, box.target, bound, "start", config);
  const finishing = `Finish it with: ${finishCommand(stack)} (any time, from any machine with the stack's backend)`;
  const deadline = workflowDeadline(result.fields, undefined, box.timeoutMinutes, ctx.marginMinutes, config);
  const until = deadline
    ? `; its deadline is ${formatTime(deadlineOf(deadline))} (${deadline.minutes}m: ${deadline.made})`
    : "";
  switch (result.kind) {
    case "started":
      return ctx.finish("detached", `the workflow runs on ${box.target}${until}. ${finishing}`);
    case "ended":
      return ctx.finish("detached", `the workflow has already ended (${result.state}). ${finishing}`);
    case "interrupted":
      return destroyAndFinish(
        ctx,
        { outcome: "interrupted", summary: `interrupted while waiting for the workflow to start` },
        interrupts.next(),
        options.keep,
      );
    case "local-timeout":
    case "unreachable": {
      const seen =
        result.kind === "unreachable"
          ? `ssh to it failing: ${result.error}`
          : `last state ${result.fields.state || "pending"}`;
      // left running: the workflow may well run, unseen from here, and a finish destroys the box at its deadline
      return ctx.finish(
        "error",
        `the workflow was not seen to start within ${bound.minutes}m (${bound.made}; ${seen}). The box is left ` +
          `running: ${finishCommand(stack)} fetches the output and destroys it once the workflow has ended or its ` +
          `deadline has passed, reached or not; to destroy it now: ${destroyCommand(stack)}`,
      );
    }
    default: {
      const never: never = result;
      throw new Error(`unexpected wait result ${JSON.stringify(never)}`);
    }
  }
}

/**
 * One look at a stack's workflow, then what it calls for: nothing while it runs (exit 10), the output and a
 * destroy once it has ended, a destroy all the same once its deadline has passed (reached or not), nothing on a
 * stack with no box. Safe to run any time, from anywhere, any number of times, two at once: the stack's lock lets
 * one destroy through and turns the other away (exit 11). Never throws.
 */
export async function runFinish(deps: CycleDeps, options: FinishOptions): Promise<CycleResult> {
  const ctx = context(deps, options, `Finish it with: ${finishCommand(options.stack)}`);
  const { stack, interrupts, say } = ctx;
  const unchanged = `nothing changed; run it again: ${finishCommand(stack)}`;
  const tryLater = `Nothing changed; run it again later: ${finishCommand(stack)}`;
  const stopped = () => ctx.finish("interrupted", `interrupted before the box was destroyed; ${unchanged}`);
  if (interrupts.count) return stopped();

  let found: StackBox;
  let config: Record<string, string>;
  let outputs: Record<string, unknown>;
  try {
    found = await deps.stackBox();
    if (!found.server) {
      return ctx.finish(
        "gone",
        `stack ${stack} has no box (no server in its state): an earlier finish or a destroy took it down, and ` +
          `its volume, if it has one, stays. ${detachCommand(stack)} starts the next run`,
      );
    }
    config = await deps.config();
    outputs = await deps.outputs();
  } catch (e) {
    // the backend, offline or refusing: nothing was read, so nothing is decided
    if (interrupts.count) return stopped();
    return ctx.finish("error", `${errorLine(e)}; ${unchanged}`);
  }
  let box: BoxOutputs;
  try {
    box = boxFromOutputs(outputs, stack);
  } catch (e) {
    // a box that runs no workflow, or cannot be reached by name: no later finish will do better
    return ctx.finish("error", `${errorLine(e)}; nothing changed. Destroy it with: ${destroyCommand(stack)}`);
  }

  // one look, with a retry or two: a single failed ssh read says little
  let text: string | undefined;
  let read = false;
  let lastError = "";
  for (let attempt = 1; attempt <= LAST_TRIES && !read; attempt++) {
    if (interrupts.count) return stopped();
    try {
      text = await deps.readState(box.target);
      read = true;
    } catch (e) {
      lastError = errorLine(e);
      say(`ssh to ${box.target} failed (attempt ${attempt}/${LAST_TRIES}): ${lastError}`);
      if (attempt < LAST_TRIES) await deps.sleep(ctx.pollSeconds * 1000);
    }
  }
  if (interrupts.count) return stopped();
  const fields = text === undefined ? {} : parseState(text);
  const state = fields.state || "pending";
  const bound = workflowDeadline(fields, found.createdMs, box.timeoutMinutes, ctx.marginMinutes, config);
  const now = deps.now();
  const deadline = bound && deadlineOf(bound);
  const past = deadline !== undefined && now >= deadline;
  const deadlineWords =
    bound && deadline !== undefined
      ? `deadline ${formatTime(deadline)} (${bound.from} + ${bound.minutes}m: ${bound.made}), ` +
        (past ? `passed ${formatDuration(now - deadline)} ago` : `in ${formatDuration(deadline - now)}`)
      : "";
  const started = /^\d+$/.test(fields.started ?? "") ? Number(fields.started) * 1000 : undefined;

  let waited: WaitResult;
  if (read && isEndState(state)) {
    waited = { kind: "ended", state, fields, text: text ?? "" };
  } else if (read && !past) {
    const ran = started !== undefined ? ` for ${formatDuration(now - started)} (since ${formatTime(started)})` : "";
    return ctx.finish(
      "running",
      `the workflow is ${state} on ${box.target}${ran}; ${deadlineWords || "its deadline is not known yet (the box's own timeout ends it)"}. ` +
        `${tryLater} (once the deadline has passed it destroys the box whatever the box says)`,
    );
  } else if (read) {
    waited = { kind: "local-timeout", fields, text };
  } else if (!bound) {
    return ctx.finish(
      "error",
      `ssh to ${box.target} failed ${LAST_TRIES} times (${lastError}), and neither the box nor the stack's state ` +
        `says when the workflow started or the server was created, so this run cannot tell whether its deadline ` +
        `has passed; nothing changed. Destroy it once you no longer need it: ${destroyCommand(stack)}`,
    );
  } else if (!past) {
    return ctx.finish(
      "running",
      `ssh to ${box.target} failed ${LAST_TRIES} times (${lastError}); the workflow may still be running; ` +
        `${deadlineWords}, after which a finish destroys the box, reached or not. ${tryLater}`,
    );
  } else {
    waited = { kind: "unreachable", fields, error: lastError, failures: LAST_TRIES, forMs: 0 };
  }
  say(waited.kind === "ended" ? `the workflow ended: ${state}` : `past the deadline: ${deadlineWords}`);
  let concluded: Concluded;
  try {
    // only an ended workflow can come here without a deadline, and its verdict needs none
    const noBound = { timeoutMinutes: box.timeoutMinutes, minutes: 0, made: "" };
    concluded = await conclude(ctx, box, waited, bound ?? noBound);
  } catch (e) {
    concluded = { outcome: "error", summary: errorLine(e) };
  }
  if (waited.kind === "unreachable") {
    concluded = {
      ...concluded,
      summary: `the box did not answer (${LAST_TRIES} ssh reads: ${lastError}) and its ${deadlineWords}`,
    };
  }
  // An ended workflow whose output could not be fetched (an ssh blip, a busy box): before the deadline the box is
  // kept, so that a later finish fetches it; past it, the box goes all the same and the output stays on the volume.
  if (waited.kind === "ended" && concluded.outcome === "error" && !past) {
    return ctx.finish(
      "running",
      `${concluded.summary}; the box is kept until its output is fetched${deadlineWords ? ` or its ${deadlineWords}` : ""}. ${tryLater}`,
    );
  }
  if (interrupts.count) return stopped();
  return destroyAndFinish(ctx, concluded, interrupts.first);
}
