import { cloudConfigOf } from "../cloud-init/render";
import { beforeAll, expect, test } from "vitest";
import { parse } from "yaml";
import { type Program, runProgram, valueOf } from "./mocks";
import { SSH_KEY } from "./stacks";

// Tailscale off, SSH open to one address: no tailnet key, a firewall rule, commands that use the public address.
let program: Program;
beforeAll(async () => {
  program = await runProgram(
    {
      "agentbox:sshPublicKeys": JSON.stringify([SSH_KEY]),
      "agentbox:tailscale": "false",
      "agentbox:allowSshFrom": "198.51.100.7/32, 2001:db8:1::/48",
      "agentbox:serverType": "cax31",
      "agentbox:user": "dev",
      "hcloud:token": "hcloud-test-token",
    },
    { stack: "arm" },
  );
});

test("no tailnet key is minted and no tailnet device is cleaned up", () => {
  expect(program.resources.map((r) => r.type).sort()).toEqual([
    "agentbox:index:AgentBox",
    "command:local:Command",
    "command:remote:Command",
    "hcloud:index/firewall:Firewall",
    "hcloud:index/server:Server",
    "hcloud:index/sshKey:SshKey",
  ]);
});

test("pulumi up waits for the box over SSH to its public address", () => {
  const wait = program.resources.find((r) => r.type === "command:remote:Command")!;
  expect(wait.inputs.connection).toMatchObject({ host: "203.0.113.10", user: "dev" });
});

test("the firewall opens TCP 22 to exactly the listed networks", () => {
  const firewall = program.resources.find((r) => r.type === "hcloud:index/firewall:Firewall")!;
  expect(firewall.inputs.rules).toEqual([
    {
      direction: "in",
      protocol: "tcp",
      port: "22",
      sourceIps: ["198.51.100.7/32", "2001:db8:1::/48"],
      description: "SSH (agentbox:allowSshFrom)",
    },
  ]);
});

test("an arm64 type gets the arm64 Claude Code build and no Tailscale setup", () => {
  const server = program.resources.find((r) => r.type === "hcloud:index/server:Server")!;
  expect(server.inputs.serverType).toBe("cax31");
  const doc = parse(cloudConfigOf(server.inputs.userData as string)) as {
    write_files: { path: string; content: string }[];
  };
  const boxEnv = doc.write_files.find((f) => f.path === "/etc/agentbox/box.env")!.content;
  expect(boxEnv).toContain("CLAUDE_PLATFORM=linux-arm64\n");
  expect(boxEnv).toContain("TAILSCALE=0\n");
  expect(doc.write_files.map((f) => f.path)).not.toContain("/run/agentbox/tailscale-authkey");
});

test("commands go to the public address", async () => {
  expect(await valueOf(program.module.sshCommand!)).toBe("ssh dev@203.0.113.10");
  expect(await valueOf(program.module.tailnetHostname!)).toBeUndefined();
});
