import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeEach, expect, test, vi } from "vitest";
import { ARGUMENT_KEYS, type AgentBoxArgs, rawConfigOf, stackArgs } from "../components/args";
import { CONFIG_KEYS, ConfigError, DEFAULT_BOX_NAME, NAMESPACE, parseConfig } from "../components/config";
import { AgentBox } from "../lib";
import { placeholderFor, rawConfigFromStackFile } from "../scripts/render";
import { type CreatedResource, type Program, runProgram, valueOf } from "./mocks";

// each program runs in a fresh module graph, as `pulumi up` runs it
beforeEach(() => vi.resetModules());

const CI_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDfZgwWjWTKbEInjqhJiqvBau6HzMb5tnGquuo5R9A7N ci@agentbox";
const PROVIDERS = {
  "hcloud:token": "hcloud-test-token",
  "digitalocean:token": "do-test-token",
  "tailscale:apiKey": "tskey-api-test",
};

/**
 * The two CI stacks, written as a program would write them. The stack file is what the boot test boots; if a key is
 * added to one and not here, the comparison below fails.
 */
const CI_ARGS: Record<string, (secret: (v: string) => pulumi.Input<string>) => AgentBoxArgs> = {
  "ci-digitalocean": (secret) => ({
    cloud: "digitalocean",
    sshPublicKeys: [CI_KEY],
    claudeOauthToken: secret(placeholderFor("claudeOauthToken")),
    egress: "allowlist",
    egressAllowHosts: ["egress-probe.agentbox.test"],
    repoUrl: "file:///srv/agentbox-fixture.git",
    agents: [
      { name: "api", worktree: "fix-api" },
      { name: "docs", repoUrl: "file:///srv/agentbox-fixture.git" },
    ],
    approvals: true,
    approvalsNtfyUrl: secret("http://127.0.0.1:8091/agentbox-ci-approvals"),
    approvalTimeoutSeconds: 30,
    approvers: ["phone-owner@example.com"],
    permissionMode: "acceptEdits",
    tailnetApi: { apiKey: secret("tskey-api-test") },
  }),
  "ci-hetzner": (secret) => ({
    cloud: "hetzner",
    sshPublicKeys: [CI_KEY],
    claudeOauthToken: secret(placeholderFor("claudeOauthToken")),
    volumeGb: 10,
    workflowPrompt: "Say hello, then stop.",
    workflowTimeoutMinutes: 1,
    ntfyUrl: secret("http://127.0.0.1:8091/agentbox-ci-topic"),
    ntfyToken: secret("tk_agentboxcitoken0000000000000000"),
    allowSshFrom: ["10.203.77.0/24"],
    maintenanceWindow: "daily 00:00-24:00",
    workflowPermissionMode: "bypassPermissions",
    tailnetApi: { apiKey: secret("tskey-api-test") },
  }),
};

/** What a program's run is, for comparing two: every registration (inputs, secrecy, options) and every output. */
async function observed(run: Program, outputs: Record<string, pulumi.Output<unknown>>) {
  const values: Record<string, unknown> = {};
  for (const [key, output] of Object.entries(outputs)) values[key] = await valueOf(output);
  // the credential record's time is when the mock ran its command
  const credential = values.credential as { setAt?: string } | undefined;
  if (credential?.setAt) credential.setAt = "<time>";
  // in the order of their URNs: a resource registers when its inputs are known, which may come sooner or later
  const resources = [...run.resources].sort((x: CreatedResource, y: CreatedResource) => x.urn.localeCompare(y.urn));
  return { resources, values };
}

const outputsOf = (box: AgentBox, names: string[]) =>
  Object.fromEntries(names.map((n) => [n, (box as unknown as Record<string, pulumi.Output<unknown>>)[n]!]));

test.each(Object.keys(CI_ARGS))(
  "%s: the component from a program's arguments gives the resources, inputs and outputs of the stack program",
  async (stack) => {
    const file = join(__dirname, "stacks", `Pulumi.${stack}.yaml`);
    const raw = rawConfigFromStackFile(readFileSync(file, "utf8"));
    const stackConfig = {
      ...Object.fromEntries(Object.entries(raw).map(([k, v]) => [`${NAMESPACE}:${k}`, v as string])),
      ...PROVIDERS,
    };
    const fromStack = await runProgram(stackConfig, { stack, ids: "byName", sshAgentKeys: [CI_KEY] });
    const names = Object.keys(fromStack.module);
    const a = await observed(fromStack, fromStack.module);

    for (const secret of [(v: string) => v, (v: string) => pulumi.secret(v)]) {
      vi.resetModules();
      let box: AgentBox | undefined;
      const fromArgs = await runProgram(PROVIDERS, {
        stack,
        ids: "byName",
        sshAgentKeys: [CI_KEY],
        program: () => {
          box = new AgentBox(DEFAULT_BOX_NAME, CI_ARGS[stack]!(secret));
          return outputsOf(box, names);
        },
      });
      const b = await observed(fromArgs, outputsOf(box!, names));
      // secrets given as text or as Outputs: the same box, down to which inputs are secret
      expect(b.resources).toEqual(a.resources);
      expect(b.values).toEqual(a.values);
    }
    expect(a.resources.length).toBeGreaterThan(8);
  },
  120_000,
);

test("every stack key is an argument, and a stack's text read as arguments reads back as the same config", () => {
  expect([...ARGUMENT_KEYS].sort()).toEqual([...CONFIG_KEYS].sort());
  const ctx = { project: "agentbox", stack: "dev" };
  const cases: Record<string, string>[] = [
    // every kind of value as Pulumi stores it: JSON lists and objects, comma lists, numbers and booleans as text
    {
      sshPublicKeys: JSON.stringify([CI_KEY]),
      memoryGb: "32",
      sudo: "true",
      tailscale: "False",
      allowSshFrom: "203.0.113.7/32, 198.51.100.0/24",
    },
    {
      sshPublicKeys: CI_KEY,
      cloud: "digitalocean",
      agents: JSON.stringify(["api", { name: "web", worktree: "w" }]),
      repoUrl: "https://example.com/r.git",
    },
    {
      sshPublicKeys: JSON.stringify([CI_KEY]),
      volumeGb: "10",
      workflowPrompt: "hi",
      workflowTimeoutMinutes: "5",
      approvers: "[]",
    },
  ];
  for (const raw of cases) {
    const again = rawConfigOf(stackArgs(raw), (_k, v) => v as string);
    expect(parseConfig(again, ctx)).toEqual(parseConfig(raw, ctx));
  }
});

test("text that is not its argument's type reaches the check as the stack wrote it, and is refused in the stack's words", () => {
  const raw = { sshPublicKeys: JSON.stringify([CI_KEY]), memoryGb: "8GB", sudo: "yes", volumeGb: "-1" };
  const problems = (r: Record<string, string | undefined>) => {
    try {
      parseConfig(r, { project: "agentbox", stack: "dev" });
      return [];
    } catch (e) {
      return (e as ConfigError).problems;
    }
  };
  const viaArgs = problems(rawConfigOf(stackArgs(raw), (_k, v) => v as string));
  expect(viaArgs).toEqual(problems(raw));
  expect(viaArgs.join("\n")).toContain('agentbox:memoryGb: "8GB" is not a whole number of gigabytes');
});

test("bad arguments are refused with every problem and its fix before anything is registered, the component too", async () => {
  let error: unknown;
  const run = await runProgram(PROVIDERS, {
    sshAgentKeys: [CI_KEY],
    program: () => {
      try {
        new AgentBox("api", {
          sshPublicKeys: [],
          memoryGb: 8,
          claudeOauthToken: "not a token",
          permissionMode: "yolo" as never,
        });
      } catch (e) {
        error = e;
      }
      return {};
    },
  });
  expect(error).toBeInstanceOf(ConfigError);
  const e = error as ConfigError;
  expect(e.message).toMatch(
    /^agentbox: AgentBox "api"'s arguments have 4 problems \(each agentbox:<key> below is its argument <key>\):/,
  );
  expect(e.problems.map((p) => p.split(":").slice(0, 2).join(":")).sort()).toEqual([
    "agentbox:claudeOauthToken",
    "agentbox:memoryGb",
    "agentbox:permissionMode",
    "agentbox:sshPublicKeys",
  ]);
  for (const p of e.problems) expect(p).toContain("Fix:");
  expect(e.message).not.toContain("not a token");
  expect(run.resources).toEqual([]);
});

/**
 * Runs `body` with the process's unhandled rejections caught into `seen` (the engine reports a program run's
 * rejections; a test looks at them instead), and puts the test runner's own handlers back after.
 */
async function withRejectionsCaught(body: (seen: unknown[]) => Promise<void>): Promise<void> {
  const seen: unknown[] = [];
  const saved = process.listeners("unhandledRejection");
  process.removeAllListeners("unhandledRejection");
  process.on("unhandledRejection", (e) => seen.push(e));
  try {
    await body(seen);
  } finally {
    process.removeAllListeners("unhandledRejection");
    for (const l of saved) process.on("unhandledRejection", l);
  }
}

test("a bad secret given as an Output: refused once its value is known, with one error, and nothing of the box is created", async () => {
  await withRejectionsCaught(async (seen) => {
    const run = await runProgram(PROVIDERS, {
      sshAgentKeys: [CI_KEY],
      program: () => {
        new AgentBox("api", {
          cloud: "digitalocean",
          sshPublicKeys: [CI_KEY],
          volumeGb: 10,
          approvals: true,
          claudeOauthToken: pulumi.secret("a token with spaces"),
          ntfyUrl: pulumi.secret("https://ntfy.sh/same-topic-for-both"),
          approvalsNtfyUrl: pulumi.secret("https://ntfy.sh/same-topic-for-both"),
          tailnetApi: { apiKey: "tskey-api-test" },
        });
        return {};
      },
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(run.resources.map((r) => r.type)).toEqual(["agentbox:index:AgentBox"]);
    expect(seen.length).toBeGreaterThan(1);
    // one error object for every resource that waited, so the engine prints it once
    expect(new Set(seen).size).toBe(1);
    const error = seen[0] as pulumi.ResourceError & { hideStack: boolean };
    expect(pulumi.ResourceError.isInstance(error)).toBe(true);
    expect(error.hideStack).toBe(true);
    expect(error.message).toMatch(/^agentbox: AgentBox "api"'s arguments have \d problems/);
    expect(error.message).toContain("agentbox:claudeOauthToken: the value (hidden) has spaces");
    expect(error.message).toContain("agentbox:approvals");
    expect(error.message).not.toContain("same-topic-for-both");
    expect(error.message).not.toContain("with spaces");
  });
});

test("an Output where a plain value must be is refused with the fix; null is not set; long numbers stay the stack's text", async () => {
  const run = await runProgram(PROVIDERS, {
    sshAgentKeys: [CI_KEY],
    program: () => {
      expect(
        () =>
          new AgentBox("api", {
            sshPublicKeys: [pulumi.output(CI_KEY)] as unknown as string[],
            volumeGb: pulumi.output(10) as unknown as number,
            tailnetApi: { tailnet: pulumi.output("example.com") as unknown as string, apiKey: pulumi.secret("k") },
          }),
      ).toThrow(
        expect.objectContaining({
          problems: [
            expect.stringMatching(/^agentbox:sshPublicKeys: an Output or a promise, .* Fix: pass a plain value/),
            expect.stringMatching(/^agentbox:volumeGb: an Output or a promise/),
            expect.stringMatching(/^tailnetApi\.tailnet: an Output or a promise/),
          ],
        }),
      );
      // what some languages' SDKs send for an argument left out
      new AgentBox("web", { sshPublicKeys: [CI_KEY], volumeGb: null, location: null } as unknown as AgentBoxArgs);
      return {};
    },
  });
  expect(run.resources.filter((r) => r.type.endsWith("volume:Volume"))).toEqual([]);
  expect(run.resources.find((r) => r.type === "hcloud:index/server:Server")?.inputs.location).toBe("fsn1");
  const huge = { sshPublicKeys: CI_KEY, memoryGb: "99999999999999999999" };
  expect(rawConfigOf(stackArgs(huge), (_k, v) => v as string).memoryGb).toBe("99999999999999999999");
});

test("a secret Output that turns out empty is refused (the box was planned with it); empty tailnetApi values are not set", async () => {
  await withRejectionsCaught(async (seen) => {
    const run = await runProgram(PROVIDERS, {
      sshAgentKeys: [CI_KEY],
      program: () => {
        new AgentBox("api", { sshPublicKeys: [CI_KEY], claudeOauthToken: pulumi.secret("") });
        // an empty API key does not win over a complete OAuth client
        new AgentBox("web", {
          sshPublicKeys: [CI_KEY],
          tailnetApi: { apiKey: "", oauthClientId: "id", oauthClientSecret: pulumi.secret("secret") },
        });
        return {};
      },
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(new Set(seen).size).toBe(1);
    expect((seen[0] as Error).message).toContain(
      "agentbox:claudeOauthToken: given as an Output whose value is empty, after the box was planned with it. Fix:",
    );
    expect(run.resources.filter((r) => r.name.startsWith("api-"))).toEqual([]);
    const cleanup = run.resources.find((r) => r.name === "web-tailnet-device");
    expect(cleanup?.inputs).toMatchObject({ oauthClientId: "id", oauthClientSecret: "secret" });
    expect(cleanup?.inputs.apiKey).toBeUndefined();
  });
});

test("a stack's text the arguments' types do not hold exactly reaches the check as the stack wrote it", () => {
  const ctx = { project: "agentbox", stack: "dev" };
  const outcome = (raw: Record<string, string | undefined>) => {
    try {
      return parseConfig(raw, ctx);
    } catch (e) {
      return (e as ConfigError).problems;
    }
  };
  const base = { sshPublicKeys: JSON.stringify([CI_KEY]) };
  const extras: Record<string, string>[] = [
    { volumeGb: "-0" },
    { memoryGb: "-0" },
    { memoryGb: "016" },
    { memoryGb: " 16 " },
    { sudo: "TRUE" },
    { sudo: "yes" },
    { agents: '"api"' },
    { agents: "3" },
    { tailnetApi: "x" },
    { allowSshFrom: "[1, 2]" },
  ];
  for (const extra of extras) {
    const raw = { ...base, ...extra };
    expect(outcome(rawConfigOf(stackArgs(raw), (_k, v) => v as string)), JSON.stringify(extra)).toEqual(outcome(raw));
  }
});

test("half a Tailscale OAuth client in tailnetApi is refused, naming the missing half", () => {
  expect(
    () =>
      new AgentBox("half-oauth", {
        sshPublicKeys: [CI_KEY],
        waitForReady: false,
        tailnetApi: { oauthClientId: "id", apiKey: " " },
      }),
  ).toThrow(
    expect.objectContaining({
      problems: [
        "tailnetApi: half a Tailscale OAuth client (oauthClientSecret is missing). Fix: give both, or apiKey instead",
      ],
    }),
  );
});
