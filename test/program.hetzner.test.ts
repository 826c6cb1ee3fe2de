import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, test } from "vitest";
import { parse } from "yaml";
import { cloudConfigOf, renderUserData } from "../cloud-init/render";
import { boxSpecOf } from "../components/boxSpec";
import { placeholderSshKey } from "../components/cloudSshKey";
import { agentboxKeys, parseConfig } from "../components/config";
import { FAKE_TAILNET_KEY, type Program, runProgram, valueOf } from "./mocks";
import { SSH_KEY, TOKEN, hetznerStack } from "./stacks";

let program: Program;
beforeAll(async () => {
  program = await runProgram(hetznerStack, { stack: "dev" });
});

const byType = (type: string) => program.resources.filter((r) => r.type === type);
const one = (type: string) => {
  const found = byType(type);
  expect(found).toHaveLength(1);
  return found[0]!;
};

describe("the Hetzner stack's resource graph", () => {
  test("creates exactly the component, tailnet key and device cleanup, SSH key, firewall, server, ready wait and release", () => {
    expect(program.resources.map((r) => `${r.type} ${r.name}`).sort()).toEqual([
      "agentbox:index:AgentBox agentbox",
      "command:local:Command agentbox-credential",
      "command:local:Command agentbox-release",
      "command:remote:Command agentbox-ready",
      "hcloud:index/firewall:Firewall agentbox-firewall",
      "hcloud:index/server:Server agentbox-server",
      "hcloud:index/sshKey:SshKey agentbox-ssh-key",
      "pulumi-nodejs:dynamic/agentbox:TailnetDeviceCleanup agentbox-tailnet-device",
      "tailscale:index/tailnetKey:TailnetKey agentbox-tailnet-key",
    ]);
  });

  test("every cloud resource is a child of the AgentBox component", () => {
    const child = (type: string, name: string) => `urn:pulumi:dev::agentbox::agentbox:index:AgentBox$${type}::${name}`;
    expect([...program.urns.values()].sort()).toEqual(
      [
        "urn:pulumi:dev::agentbox::agentbox:index:AgentBox::agentbox",
        child("tailscale:index/tailnetKey:TailnetKey", "agentbox-tailnet-key"),
        child("hcloud:index/sshKey:SshKey", "agentbox-ssh-key"),
        child("hcloud:index/firewall:Firewall", "agentbox-firewall"),
        child("hcloud:index/server:Server", "agentbox-server"),
        child("command:remote:Command", "agentbox-ready"),
        child("command:local:Command", "agentbox-release"),
        child("command:local:Command", "agentbox-credential"),
        child("pulumi-nodejs:dynamic/agentbox:TailnetDeviceCleanup", "agentbox-tailnet-device"),
      ].sort(),
    );
  });

  test("the server gets the cheapest 16 GB type, Debian 13, its key and its firewall", () => {
    const server = one("hcloud:index/server:Server");
    const sshKey = one("hcloud:index/sshKey:SshKey");
    const firewall = one("hcloud:index/firewall:Firewall");
    const labels = { "managed-by": "agentbox", "agentbox-project": "agentbox", "agentbox-stack": "dev" };
    expect(sshKey.inputs).toEqual({
      name: "agentbox-dev",
      publicKey: placeholderSshKey("agentbox", "dev", SSH_KEY),
      labels,
    });
    expect(firewall.inputs).toEqual({ name: "agentbox-dev", rules: [], labels });
    const { userData, ...rest } = server.inputs;
    expect(rest).toEqual({
      name: "agentbox-dev",
      serverType: "cx43",
      image: "debian-13",
      location: "fsn1",
      // mock ids are handed out in creation order: the SSH key and firewall come before the server
      sshKeys: [expect.stringMatching(/^\d+$/)],
      firewallIds: [expect.any(Number)],
      publicNets: [{ ipv4Enabled: true, ipv6Enabled: true }],
      labels,
      shutdownBeforeDeletion: true,
    });
    expect(Number.isNaN((rest.firewallIds as number[])[0])).toBe(false);
    expect(typeof userData).toBe("string");
  });

  test("the tailnet key is single-use, preauthorized, tagged, short-lived and never silently re-minted", () => {
    const key = one("tailscale:index/tailnetKey:TailnetKey");
    expect(key.inputs).toEqual({
      reusable: false,
      ephemeral: false,
      preauthorized: true,
      tags: ["tag:agentbox"],
      expiry: 3600,
      recreateIfInvalid: "never",
      description: expect.stringMatching(/^agentbox [0-9a-f]{16}$/),
    });
  });
});

describe("what a replacement does", () => {
  test("the SSH key and the server are deleted before they are replaced (Hetzner refuses a name in use)", () => {
    expect(one("hcloud:index/sshKey:SshKey").options).toMatchObject({ deleteBeforeReplace: true, protect: false });
    expect(one("hcloud:index/server:Server").options).toMatchObject({ deleteBeforeReplace: true, protect: false });
  });

  test("the firewall is never replaced (every input changes in place), so it keeps the engine's default", () => {
    expect(one("hcloud:index/firewall:Firewall").options).toMatchObject({ deleteBeforeReplace: false });
    expect(one("hcloud:index/firewall:Firewall").options).not.toHaveProperty("ignoreChanges");
  });

  test("the server's delete keeps the provider's own shutdown wait (no custom timeout reaches it)", () => {
    expect(one("hcloud:index/server:Server").options!.customTimeouts?.delete ?? "").toBe("");
  });
});

describe("secrets", () => {
  test("user-data reaches the server as a secret and the exported user-data is secret", async () => {
    expect(one("hcloud:index/server:Server").secretInputs).toEqual(["userData"]);
    expect(await pulumi.isSecret(program.module.userData!)).toBe(true);
  });

  test("the token and the tailnet key appear in no input except the secret user-data", () => {
    for (const r of program.resources) {
      const visible = Object.fromEntries(Object.entries(r.inputs).filter(([k]) => !r.secretInputs.includes(k)));
      expect(JSON.stringify(visible)).not.toContain(TOKEN);
      expect(JSON.stringify(visible)).not.toContain(FAKE_TAILNET_KEY);
    }
  });

  test("the tailnet key's description is derived from the secret config, so it is secret too", () => {
    expect(one("tailscale:index/tailnetKey:TailnetKey").secretInputs).toEqual(["description"]);
  });

  test("the user-data carries the token in the agent's env file and the key in root's 0600 file", () => {
    const doc = parse(cloudConfigOf(one("hcloud:index/server:Server").inputs.userData as string)) as {
      write_files: { path: string; content: string; permissions: string; owner?: string }[];
    };
    const env = doc.write_files.find((f) => f.path === "/home/agent/.config/agentbox/agent.env")!;
    expect(env).toMatchObject({ owner: "agent:agent", permissions: "0600" });
    expect(env.content).toContain(`CLAUDE_CODE_OAUTH_TOKEN=${TOKEN}\n`);
    const key = doc.write_files.find((f) => f.path === "/run/agentbox/tailscale-authkey")!;
    expect(key).toMatchObject({ owner: "root:root", permissions: "0600", content: `${FAKE_TAILNET_KEY}\n` });
  });
});

describe("outputs", () => {
  test("say what was bought and how to get in", async () => {
    const out = Object.fromEntries(
      await Promise.all(
        Object.entries(program.module)
          .filter(([k]) => k !== "userData")
          .map(async ([k, v]) => [k, await valueOf(v)] as const),
      ),
    );
    expect(out).toEqual({
      cloud: "hetzner",
      serverType: "cx43",
      memoryGb: 16,
      monthlyPrice: "16.49 EUR/month (catalogue of 2026-09-29, excl. VAT)",
      ipv4: "203.0.113.10",
      ipv6: "2001:db8::10",
      tailnetHostname: "agentbox-dev",
      sshCommand: "ssh agent@agentbox-dev",
      sshTarget: "agent@agentbox-dev",
      volumeId: undefined,
      workflow: undefined,
      ready: "agentbox: ready (mock)",
      moshCommand: "mosh agent@agentbox-dev -- tmux -L agentbox attach -t claude",
      attachCommand: "ssh -t agent@agentbox-dev tmux -L agentbox attach -t claude",
      credential: { key: "claudeOauthToken", setAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T[\d:.]+Z$/) as string },
    });
  });

  test("the user-data is exactly what the pure builder renders for this config (deterministic)", async () => {
    const config = parseConfig(agentboxKeys(hetznerStack), { project: "agentbox", stack: "dev" });
    const spec = () => boxSpecOf(config, { agentAuth: TOKEN, tailnetKey: FAKE_TAILNET_KEY });
    const expected = renderUserData(spec(), "hetzner");
    expect(await valueOf(program.module.userData!)).toBe(expected);
    expect(renderUserData(spec(), "hetzner")).toBe(expected);
  });
});
