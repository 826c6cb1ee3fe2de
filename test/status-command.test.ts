import { expect, test } from "vitest";
// @ts-expect-error: a plain ES module without types
import { credentialNotes, statusPlan } from "../scripts/status.mjs";

const outputs = {
  cloud: "hetzner",
  serverType: "cx43",
  memoryGb: 16,
  monthlyPrice: "16.49 EUR/month (catalogue of 2026-09-29, excl. VAT)",
  ipv4: "203.0.113.10",
  tailnetHostname: "agentbox-dev",
  sshCommand: "ssh agent@agentbox-dev",
};

test("status goes to the box the stack's own sshCommand names and runs agentbox-status there", () => {
  expect(statusPlan(outputs, "dev")).toEqual({
    header: "dev: hetzner cx43, 16 GB, 16.49 EUR/month (catalogue of 2026-09-29, excl. VAT); tailnet agentbox-dev",
    command: ["ssh", "-t", "-o", "ConnectTimeout=15", "agent@agentbox-dev", "agentbox-status"],
    notes: [],
    agents: [],
  });
});

test("with agentbox:agents, status names each agent, what it works on and its attach command", () => {
  const agents = [
    {
      name: "api",
      work: "worktree of the stack's repository, branch agentbox/api",
      attachCommand: "ssh -t agent@agentbox-dev tmux -L agentbox attach -t api",
    },
    {
      name: "docs",
      work: "an empty folder",
      attachCommand: "ssh -t agent@agentbox-dev tmux -L agentbox attach -t docs",
    },
  ];
  expect(statusPlan({ ...outputs, agents }, "dev").agents).toEqual([
    "agent api (worktree of the stack's repository, branch agentbox/api): ssh -t agent@agentbox-dev tmux -L agentbox attach -t api",
    "agent docs (an empty folder): ssh -t agent@agentbox-dev tmux -L agentbox attach -t docs",
  ]);
});

const token = (setAt: string) => ({ key: "claudeOauthToken", setAt });
const on = (day: string) => new Date(`${day}T12:00:00Z`);

test("the setup token's age: said while it is young, a warning a month before its year ends, then expired", () => {
  expect(credentialNotes(token("2026-01-10T08:00:00.000Z"), "dev", on("2026-06-01"))).toEqual([
    "credential: agentbox:claudeOauthToken set 2026-01-10, 142 days ago (a setup token lasts a year)",
  ]);
  const fix =
    "make a new one with claude setup-token, then pulumi config set --secret agentbox:claudeOauthToken and npm run up -- --stack dev (a new token replaces the server; a volume keeps the work)";
  // 335 days old: 30 left, the first day of the warning
  expect(credentialNotes(token("2026-01-10T08:00:00.000Z"), "dev", on("2026-12-11"))).toEqual([
    `WARNING: agentbox:claudeOauthToken was set 2026-01-10, 335 days ago: a setup token lasts a year, so it ends in about 30 days. Before then: ${fix}`,
  ]);
  expect(credentialNotes(token("2026-01-10T08:00:00.000Z"), "dev", on("2026-12-10"))[0]).toMatch(/^credential: /);
  expect(credentialNotes(token("2025-11-01T08:00:00.000Z"), "dev", on("2026-12-01"))).toEqual([
    `WARNING: agentbox:claudeOauthToken was set 2025-11-01, 395 days ago: a setup token lasts a year, so it has probably expired and the agent cannot log in. Fix: ${fix}`,
  ]);
  // in the plan, from the stack's outputs
  expect(
    statusPlan({ ...outputs, credential: token("2025-11-01T08:00:00.000Z") }, "dev", on("2026-12-01")).notes,
  ).toHaveLength(1);
});

test("an API key does not expire (the box reports one that stops working); nothing recorded, nothing said", () => {
  expect(
    credentialNotes({ key: "anthropicApiKey", setAt: "2025-01-01T00:00:00.000Z" }, "dev", on("2026-12-01")),
  ).toEqual(["credential: agentbox:anthropicApiKey set 2025-01-01, 699 days ago"]);
  expect(credentialNotes(undefined, "dev")).toEqual([]);
  expect(credentialNotes({ key: "claudeOauthToken", setAt: "yesterday-ish" }, "dev")).toEqual([]);
});

test("without Tailscale it says the public address", () => {
  const plan = statusPlan({ ...outputs, tailnetHostname: undefined, sshCommand: "ssh agent@203.0.113.10" }, "dev");
  expect(plan.header).toMatch(/; public 203\.0\.113\.10$/);
  expect(plan.command).toContain("agent@203.0.113.10");
});

test("a stack without a box says how to create one", () => {
  expect(() => statusPlan({}, "dev")).toThrow(
    "stack dev has no box (no outputs): create it with npm run up -- --stack dev",
  );
});
