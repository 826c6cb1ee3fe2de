import { expect, test } from "vitest";
// @ts-expect-error: a plain ES module without types
import { statusPlan } from "../scripts/status.mjs";

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
  });
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
