import { expect, test } from "vitest";
import { ConfigError } from "../components/config";
import { installMocks } from "./mocks";

test("bad config stops the program with every problem listed, before any resource is created", async () => {
  const created = installMocks(
    "agentbox",
    "dev",
    { "agentbox:memoryGb": "8", "agentbox:cloud": "hetzner", "agentbox:sshPublicKeys": "[]" },
    [],
  );
  const error = await import("../index.js").then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).problems).toHaveLength(2);
  expect((error as ConfigError).message).toMatch(/^agentbox: the stack configuration has 2 problems:\n {2}- /);
  expect((error as ConfigError).message).toContain("agentbox:memoryGb: 8 GB is below 16 GB");
  expect((error as ConfigError).message).toContain("agentbox:sshPublicKeys: at least one SSH public key is required");
  expect(created).toEqual([]);
});

test("a missing provider token is reported as config, before any resource", async () => {
  // a fresh module graph: index.ts runs again
  const { vi } = await import("vitest");
  vi.resetModules();
  const created = installMocks(
    "agentbox",
    "dev",
    {
      "agentbox:sshPublicKeys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOgZ5Q7v0z7QeYt1m0e0r2cJ9fG3x1y5d6aQwRkH3mXo a@b",
    },
    [],
  );
  const saved = { ...process.env };
  delete process.env.HCLOUD_TOKEN;
  delete process.env.TAILSCALE_API_KEY;
  delete process.env.SSH_AUTH_SOCK;
  const error = await import("../index.js").then(
    () => undefined,
    (e: unknown) => e,
  );
  process.env = saved;
  expect((error as ConfigError).problems.map((p) => p.split(":").slice(0, 2).join(":"))).toEqual([
    "hcloud:token",
    "tailscale:apiKey",
    // and that pulumi up could not log in to the box to wait for it (no ssh-agent here)
    "agentbox:waitForReady",
  ]);
  expect(created).toEqual([]);
});
