import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import { boxSecretsOf, boxSpecOf } from "../components/boxSpec";
import { DEFAULT_APPROVAL_TIMEOUT_SECONDS, type RawConfig, parseConfig } from "../components/config";
import { BOX_PATHS, type BoxSpec, buildCloudConfig, packagesFor } from "../cloud-init/render";
import { SSH_KEY, configProblems } from "./stacks";

// agentbox:approvals (permission requests answered from a phone) and agentbox:permissionMode /
// workflowPermissionMode (README: "Answering from your phone", "Permission modes")

const ctx = { project: "agentbox", stack: "dev" };
const NTFY = "https://ntfy.sh/agentbox-0123456789abcdef";
const base: RawConfig = { sshPublicKeys: JSON.stringify([SSH_KEY]) };
const APPROVALS_NTFY = "https://ntfy.sh/agentbox-approvals-fedcba9876543210";
const on: RawConfig = { ...base, approvalsNtfyUrl: APPROVALS_NTFY, approvals: "true" };
const problemsOf = (raw: RawConfig): string[] => configProblems(raw, ctx);
const specOf = (raw: RawConfig): BoxSpec => {
  const c = parseConfig(raw, ctx);
  return boxSpecOf(c, { ...boxSecretsOf(c), tailnetKey: "tskey-auth-test" });
};
type File = { path: string; content: string; permissions: string };
const filesOf = (spec: BoxSpec) => (buildCloudConfig(spec) as { write_files: File[] }).write_files;
const fileOf = (spec: BoxSpec, path: string) => filesOf(spec).find((f) => f.path === path);
const settingsOf = (spec: BoxSpec) =>
  JSON.parse(fileOf(spec, BOX_PATHS.claudeManagedSettings)!.content) as {
    hooks: Record<string, { hooks: Record<string, unknown>[] }[]>;
    skipDangerousModePermissionPrompt?: boolean;
  };
const boxEnv = (spec: BoxSpec) => fileOf(spec, BOX_PATHS.boxEnv)!.content;

describe("the config", () => {
  test("off by default: no receiver, no hook, no settings on the box", () => {
    const spec = specOf({ ...base, ntfyUrl: NTFY });
    expect(spec.approvals).toBeUndefined();
    expect(fileOf(spec, BOX_PATHS.approve)).toBeUndefined();
    expect(fileOf(spec, BOX_PATHS.approveUnit)).toBeUndefined();
    expect(Object.keys(settingsOf(spec).hooks).sort()).toEqual([
      "Notification",
      "Stop",
      "StopFailure",
      "UserPromptSubmit",
    ]);
    expect(boxEnv(spec)).not.toMatch(/APPROV/);
  });

  test("on: the default wait, no approvers (any other device of the tailnet), the port", () => {
    const c = parseConfig(on, ctx);
    expect(c.approvals).toEqual({
      timeoutSeconds: DEFAULT_APPROVAL_TIMEOUT_SECONDS,
      approvers: [],
      url: APPROVALS_NTFY,
    });
    expect(specOf(on).approvals).toEqual({ timeoutSeconds: 900, approvers: [], port: 876, url: APPROVALS_NTFY });
    // the agent's notifications are off unless the stack has ntfyUrl too: the requests' topic is not the agent's
    expect(specOf(on).notify).toBeUndefined();
  });

  test("approvers are Tailscale login names, compared without case", () => {
    const c = parseConfig({ ...on, approvers: JSON.stringify(["Alice@Example.com", "bob@github"]) }, ctx);
    expect(c.approvals?.approvers).toEqual(["alice@example.com", "bob@github"]);
    expect(problemsOf({ ...on, approvers: JSON.stringify(["alice", "x y@z"]) })).toEqual([
      expect.stringMatching(
        /^agentbox:approvers\[0\]: "alice" is not a Tailscale login name .* Fix: pulumi config set --path 'agentbox:approvers\[0\]' you@example.com$/,
      ),
      expect.stringMatching(/^agentbox:approvers\[1\]: "x y@z" is not a Tailscale login name/),
    ]);
  });

  test.each([
    [
      { ...base, approvals: "true" },
      /^agentbox:approvals: true, but agentbox:approvalsNtfyUrl is not set; the requests travel on an ntfy topic of their own, which the agent never sees\. Fix: pulumi config set --secret agentbox:approvalsNtfyUrl/,
    ],
    [
      { ...on, tailscale: "false", allowSshFrom: '["203.0.113.7/32"]' },
      /^agentbox:approvals: true, but agentbox:tailscale is false; a tap reaches the box over the tailnet only\. Fix: pulumi config set agentbox:tailscale true/,
    ],
    [
      { ...on, permissionMode: "bypassPermissions" },
      /^agentbox:approvals: true, but agentbox:permissionMode is bypassPermissions, in which the agent never asks\. Fix:/,
    ],
    [{ ...on, permissionMode: "dontAsk" }, /^agentbox:approvals: true, but agentbox:permissionMode is dontAsk/],
    [
      { ...base, approvers: '["a@b.c"]' },
      /^agentbox:approvers: set while agentbox:approvals is false, where it does nothing\. Fix: pulumi config set agentbox:approvals true, or pulumi config rm agentbox:approvers$/,
    ],
    [
      { ...base, approvalTimeoutSeconds: "60" },
      /^agentbox:approvalTimeoutSeconds: set while agentbox:approvals is false/,
    ],
    [{ ...on, approvalTimeoutSeconds: "10" }, /^agentbox:approvalTimeoutSeconds: 10 is outside 30–3600 seconds\. Fix:/],
    [
      { ...on, approvals: "yes" },
      /^agentbox:approvals: "yes" is not true or false\. Fix: pulumi config set agentbox:approvals false$/,
    ],
    [
      { ...on, ntfyUrl: APPROVALS_NTFY },
      /^agentbox:approvalsNtfyUrl: the same topic as agentbox:ntfyUrl, which the agent reads and writes: it could post a notification of its own carrying a request's buttons\. Fix:/,
    ],
    [
      {
        ...on,
        ntfyUrl: NTFY,
        ntfyToken: "tk_sameforbothtopics00000000000",
        approvalsNtfyToken: "tk_sameforbothtopics00000000000",
      },
      /^agentbox:approvalsNtfyToken: the same token as agentbox:ntfyToken, which the agent holds\. Fix:/,
    ],
    [
      { ...base, approvalsNtfyUrl: APPROVALS_NTFY },
      /^agentbox:approvalsNtfyUrl: set while agentbox:approvals is false, where it does nothing\./,
    ],
    [
      { ...on, approvalsNtfyUrl: "https://ntfy.sh/a b" },
      /^agentbox:approvalsNtfyUrl: the value \(hidden\) is not an ntfy topic URL/,
    ],
  ])("refused with the key and the fix: %#", (raw, message) => {
    expect(problemsOf(raw as RawConfig)).toEqual([expect.stringMatching(message)]);
  });
});

describe("permission modes", () => {
  test("each of Claude Code's modes is taken; anything else is refused with the list", () => {
    for (const mode of ["default", "acceptEdits", "plan", "auto", "dontAsk", "bypassPermissions"])
      expect(parseConfig({ ...base, permissionMode: mode }, ctx).permissionMode).toBe(mode);
    expect(problemsOf({ ...base, permissionMode: "yolo" })).toEqual([
      "agentbox:permissionMode: \"yolo\" is not one of Claude Code's permission modes (default, acceptEdits, plan, auto, dontAsk, bypassPermissions). Fix: pulumi config set agentbox:permissionMode acceptEdits, or pulumi config rm agentbox:permissionMode for Claude Code's default",
    ]);
  });

  test("bypassPermissions with sudo is refused: any command the agent is talked into would run as root", () => {
    for (const key of ["permissionMode", "workflowPermissionMode"]) {
      const raw = { ...base, sudo: "true", workflowPrompt: "Go.", [key]: "bypassPermissions" };
      expect(problemsOf(raw)).toEqual([
        expect.stringMatching(
          new RegExp(
            `^agentbox:${key}: bypassPermissions while agentbox:sudo is true .* Fix: pulumi config set agentbox:sudo false`,
          ),
        ),
      ]);
      expect(problemsOf({ ...raw, sudo: "false" })).toEqual([]);
    }
  });

  test("the workflow's mode needs a workflow", () => {
    expect(problemsOf({ ...base, workflowPermissionMode: "acceptEdits" })).toEqual([
      expect.stringMatching(/^agentbox:workflowPermissionMode: set, but the stack has no workflow prompt\. Fix:/),
    ]);
  });

  test("they reach the box as settings its scripts pass to claude; bypass skips its one-time warning", () => {
    const spec = specOf({
      ...base,
      permissionMode: "acceptEdits",
      workflowPrompt: "Go.",
      workflowPermissionMode: "bypassPermissions",
    });
    expect(boxEnv(spec)).toContain("\nPERMISSION_MODE=acceptEdits\n");
    expect(boxEnv(spec)).toContain("\nWORKFLOW_PERMISSION_MODE=bypassPermissions\n");
    expect(settingsOf(spec).skipDangerousModePermissionPrompt).toBe(true);
    expect(settingsOf(specOf(base)).skipDangerousModePermissionPrompt).toBeUndefined();
    expect(boxEnv(specOf(base))).not.toMatch(/PERMISSION_MODE/);
  });

  test("the agent's session and the workflow's run pass the mode as Claude Code's --permission-mode", () => {
    const run = (script: string, env: Record<string, string>) =>
      execFileSync("bash", ["-c", script], { env: { ...process.env, ...env }, encoding: "utf8" });
    // the lines of the box's scripts that build claude's arguments, run with a stand-in claude
    const session = readBoxScript("claude-session.sh");
    const line = session.split("\n").find((l) => l.includes("--permission-mode"))!;
    expect(run(`args=(); ${line}; printf '%s\\n' "\${args[@]}"`, { PERMISSION_MODE: "plan" })).toBe(
      "--permission-mode\nplan\n",
    );
    expect(run(`args=(); ${line}; echo "\${#args[@]}"`, { PERMISSION_MODE: "" })).toBe("0\n");
    // the workflow's: bash's ${VAR:+words}, the mode one word however it is spelled
    const workflow = readBoxScript("workflow.sh");
    const flag = /\$\{WORKFLOW_PERMISSION_MODE:\+--permission-mode "\$WORKFLOW_PERMISSION_MODE"\}/.exec(workflow)?.[0];
    expect(flag).toBeDefined();
    const argv = `printf '%s\\n' ${flag}`;
    expect(run(argv, { WORKFLOW_PERMISSION_MODE: "bypassPermissions" })).toBe("--permission-mode\nbypassPermissions\n");
    expect(run(`${argv} | wc -l`, { WORKFLOW_PERMISSION_MODE: "" }).trim()).toBe("1");
  });
});

const readBoxScript = (name: string) =>
  execFileSync("cat", [join(__dirname, "..", "cloud-init", "files", name)], { encoding: "utf8" });

describe("on the box", () => {
  const spec = specOf({ ...on, approvers: '["you@example.com"]', approvalTimeoutSeconds: "120" });

  test("the hooks in managed settings have Claude Code's documented shape", () => {
    const hooks = settingsOf(spec).hooks;
    const approve = `${BOX_PATHS.approve} hook`;
    // PermissionRequest: waited for (not async), its own limit above the request's so the receiver answers first
    expect(hooks.PermissionRequest).toEqual([{ hooks: [{ type: "command", command: approve, timeout: 150 }] }]);
    // the events that settle a request in the terminal: asynchronous, never holding the agent up
    for (const event of ["PostToolUse", "Stop", "StopFailure", "UserPromptSubmit"])
      expect(hooks[event]!.at(-1), event).toEqual({
        hooks: [{ type: "command", command: approve, timeout: 10, async: true }],
      });
    // the notification hooks stay first
    expect(hooks.Stop![0]!.hooks[0]!.command).toBe(`${BOX_PATHS.lib}/notify hook`);
  });

  test("the receiver: its file, its unit (a user of its own, the ntfy settings as a credential), its settings", () => {
    expect(fileOf(spec, BOX_PATHS.approve)?.permissions).toBe("0755");
    const unit = fileOf(spec, BOX_PATHS.approveUnit)!.content;
    for (const line of [
      "DynamicUser=yes",
      "RuntimeDirectory=agentbox-approvals",
      "RuntimeDirectoryMode=0755",
      "NoNewPrivileges=yes",
    ])
      expect(unit).toContain(`\n${line}\n`);
    expect(boxEnv(spec)).toMatch(/\nAPPROVALS=1\nAPPROVAL_TIMEOUT=120\nAPPROVERS=you@example.com\nAPPROVE_PORT=876\n/);
    // the requests' topic: root's file, handed to the receiver alone; never in the agent's home or box.env
    expect(fileOf(spec, BOX_PATHS.approveEnv)).toMatchObject({
      permissions: "0600",
      owner: "root:root",
      content: `NTFY_URL=${APPROVALS_NTFY}\n`,
    });
    expect(unit).toContain(`\nLoadCredential=ntfy:${BOX_PATHS.approveEnv}\n`);
    expect(
      filesOf(spec)
        .filter((f) => f.content.includes(APPROVALS_NTFY))
        .map((f) => f.path),
    ).toEqual([BOX_PATHS.approveEnv]);
    // a port below 1024, which no process of the agent can take
    expect(unit).toContain("\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n");
    expect(packagesFor(spec)).toContain("python3");
    // the receiver's unit is enabled by provisioning, which the box runs as a step of its own
    expect(readBoxScript("provision.sh")).toMatch(/step approvals start_approvals/);
  });

  test("the document still parses, and the socket path is the one the hook trusts", () => {
    expect(parse(JSON.stringify(buildCloudConfig(spec)))).toBeTruthy();
    expect(readBoxScript("approve.py")).toContain(`SOCKET = RUN_DIR + "/approve.sock"`);
    expect(BOX_PATHS.approveSocket).toBe("/run/agentbox-approvals/approve.sock");
  });
});

/** Calls a function of the box's approve.py (imported as a module) with JSON arguments; its JSON result. */
function py(fn: string, ...args: unknown[]): unknown {
  const file = join(__dirname, "..", "cloud-init", "files", "approve.py");
  const code = `import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("approve", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
print(json.dumps(getattr(m, sys.argv[2])(*json.loads(sys.argv[3]))))`;
  const r = spawnSync("python3", ["-B", "-c", code, file, fn, JSON.stringify(args)], { encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe("the hook's decision", () => {
  // Claude Code's hooks reference (code.claude.com/docs/en/hooks, "PermissionRequest input" and "PermissionRequest
  // decision control"): the documented input, and the decision object it takes back
  const request = {
    session_id: "abc123",
    transcript_path: "/home/agent/.claude/projects/x/00893aaf.jsonl",
    cwd: "/home/agent/workspace",
    permission_mode: "default",
    hook_event_name: "PermissionRequest",
    tool_name: "Bash",
    tool_input: { command: "rm -rf node_modules", description: "Remove node_modules directory" },
    permission_suggestions: [
      {
        type: "addRules",
        rules: [{ toolName: "Bash", ruleContent: "rm -rf node_modules" }],
        behavior: "allow",
        destination: "localSettings",
      },
    ],
  };

  test("allow: exactly the documented object", () => {
    expect(py("hook_output", "allow", request)).toEqual({
      hookSpecificOutput: { hookEventName: "PermissionRequest", decision: { behavior: "allow" } },
    });
  });

  test("deny: behavior deny with the message Claude is told (no interrupt: the agent goes on)", () => {
    expect(py("hook_output", "deny", request)).toEqual({
      hookSpecificOutput: {
        hookEventName: "PermissionRequest",
        decision: { behavior: "deny", message: "Denied from the phone (agentbox approvals)." },
      },
    });
  });

  test("always allow: Claude Code's own suggestion echoed as updatedPermissions (the dialog's 'always allow')", () => {
    expect(py("hook_output", "always", request)).toEqual({
      hookSpecificOutput: {
        hookEventName: "PermissionRequest",
        decision: { behavior: "allow", updatedPermissions: request.permission_suggestions },
      },
    });
    // without a suggestion, a plain allow
    expect(py("hook_output", "always", { ...request, permission_suggestions: [] })).toEqual(
      py("hook_output", "allow", request),
    );
  });

  test("no answer (the time limit, the terminal first): no decision at all, which leaves the prompt in place", () => {
    for (const answer of [null, "", "maybe", "ALLOW"]) expect(py("hook_output", answer, request)).toBeNull();
  });

  test("a request and the PostToolUse of the same call have the same key; another call another", () => {
    const post = { ...request, hook_event_name: "PostToolUse", tool_response: { stdout: "" } };
    expect(py("call_key", post)).toBe(py("call_key", request));
    expect(py("call_key", { ...request, tool_input: { command: "rm -rf /" } })).not.toBe(py("call_key", request));
  });

  test("what the notification shows of the agent's text: one printable line, cut", () => {
    expect(py("printable", "rm -rf x\n\u001b[31mred\u0007\ttab", 300)).toBe("rm -rf x [31mred tab");
    expect(py("printable", "x".repeat(500), 300)).toHaveLength(300);
    expect(py("summary", request)).toBe("rm -rf node_modules");
    expect(py("summary", { tool_input: { file_path: "/etc/hosts", content: "127.0.0.1 x\n" } })).toBe(
      "/etc/hosts (12 characters of new text; the diff is in the terminal)",
    );
    expect(py("rules_of", request)).toBe("Bash(rm -rf node_modules)");
    expect(py("rules_of", { permission_suggestions: [{ type: "addRules", rules: [{ toolName: "WebFetch" }] }] })).toBe(
      "WebFetch",
    );
  });

  test("the hook and the receiver run isolated from the agent's Python (no PYTHON* variables, no user site)", () => {
    expect(readBoxScript("approve.py").split("\n")[0]).toBe("#!/usr/bin/python3 -I");
  });

  test("the hook never blocks and never fails: without the receiver's folder it answers nothing at once", () => {
    // this machine has no /run/agentbox-approvals: the hook must not look for a socket anywhere else
    const file = join(__dirname, "..", "cloud-init", "files", "approve.py");
    const t0 = Date.now();
    const r = spawnSync("python3", ["-B", file, "hook"], { input: JSON.stringify(request), encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("");
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});
