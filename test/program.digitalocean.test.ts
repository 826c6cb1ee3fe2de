import * as pulumi from "@pulumi/pulumi";
import { beforeAll, expect, test } from "vitest";
import { parse } from "yaml";
import { placeholderSshKey } from "../components/cloudSshKey";
import { type Program, runProgram, valueOf } from "./mocks";
import { SSH_KEY, TOKEN, digitalOceanStack } from "./stacks";

let program: Program;
beforeAll(async () => {
  program = await runProgram(digitalOceanStack, { stack: "web-app" });
});

const one = (type: string) => {
  const found = program.resources.filter((r) => r.type === type);
  expect(found).toHaveLength(1);
  return found[0]!;
};

test("creates exactly the component, tailnet key and device cleanup, SSH key, droplet, firewall, ready wait and release, all children of the component", () => {
  const child = (type: string, name: string) =>
    `urn:pulumi:web-app::agentbox::agentbox:index:AgentBox$${type}::${name}`;
  expect([...program.urns.values()].sort()).toEqual(
    [
      "urn:pulumi:web-app::agentbox::agentbox:index:AgentBox::agentbox",
      child("tailscale:index/tailnetKey:TailnetKey", "agentbox-tailnet-key"),
      child("digitalocean:index/sshKey:SshKey", "agentbox-ssh-key"),
      child("digitalocean:index/droplet:Droplet", "agentbox-server"),
      child("digitalocean:index/firewall:Firewall", "agentbox-firewall"),
      child("command:remote:Command", "agentbox-ready"),
      child("command:local:Command", "agentbox-release"),
      child("command:local:Command", "agentbox-credential"),
      child("pulumi-nodejs:dynamic/agentbox:TailnetDeviceCleanup", "agentbox-tailnet-device"),
    ].sort(),
  );
  expect(program.resources).toHaveLength(9);
});

test("the droplet: cheapest 32 GB size in ams3, Debian 13, the stack's key by fingerprint, tags naming project and stack", () => {
  const droplet = one("digitalocean:index/droplet:Droplet");
  expect(one("digitalocean:index/sshKey:SshKey").inputs).toEqual({
    name: "agentbox-web-app",
    publicKey: placeholderSshKey("agentbox", "web-app", SSH_KEY),
  });
  const { userData, ...rest } = droplet.inputs;
  expect(rest).toEqual({
    name: "agentbox-web-app",
    size: "s-8vcpu-32gb-amd",
    image: "debian-13-x64",
    region: "ams3",
    sshKeys: ["fp:agentbox-ssh-key"],
    ipv6: true,
    tags: ["agentbox", "agentbox-project:agentbox", "agentbox-stack:web-app", "agentbox-box:agentbox-web-app"],
    gracefulShutdown: true,
  });
  expect(droplet.secretInputs).toEqual(["userData"]);
  const env = (parse(userData as string) as { write_files: { path: string; content: string }[] }).write_files.find(
    (f) => f.path === "/home/agent/.config/agentbox/agent.env",
  );
  expect(env?.content).toBe(`DISABLE_AUTOUPDATER=1\nANTHROPIC_API_KEY=${TOKEN}\n`);
});

test("the SSH key and the droplet are deleted before they are replaced; the droplet's delete may wait 5 minutes", () => {
  expect(one("digitalocean:index/sshKey:SshKey").options).toMatchObject({ deleteBeforeReplace: true });
  expect(one("digitalocean:index/droplet:Droplet").options).toMatchObject({
    deleteBeforeReplace: true,
    protect: false,
    // the provider's own wait for the graceful shutdown is 60 s, after which the delete fails
    customTimeouts: { create: "", update: "", delete: "5m" },
  });
  // every input of the firewall changes in place: it is never replaced
  expect(one("digitalocean:index/firewall:Firewall").options).toMatchObject({ deleteBeforeReplace: false });
});

test("the firewall admits nothing inbound, allows all outbound, and covers the box's tag before the droplet exists", () => {
  const firewall = one("digitalocean:index/firewall:Firewall");
  const everywhere = ["0.0.0.0/0", "::/0"];
  expect(firewall.inputs).toEqual({
    name: "agentbox-web-app",
    tags: ["agentbox-box:agentbox-web-app"],
    inboundRules: [],
    outboundRules: [
      { protocol: "tcp", portRange: "1-65535", destinationAddresses: everywhere },
      { protocol: "udp", portRange: "1-65535", destinationAddresses: everywhere },
      { protocol: "icmp", destinationAddresses: everywhere },
    ],
  });
  // no dependency on the droplet; the droplet depends on it: created first, deleted last
  expect(firewall.options!.dependencies).toEqual([]);
  expect(one("digitalocean:index/droplet:Droplet").options!.dependencies).toContain(
    firewall.urn.replace("::agentbox::", "::agentbox::agentbox:index:AgentBox$"),
  );
});

test("outputs name the droplet size and price in USD and the tailnet route in", async () => {
  expect(await valueOf(program.module.serverType!)).toBe("s-8vcpu-32gb-amd");
  expect(await valueOf(program.module.monthlyPrice!)).toBe("168.00 USD/month (catalogue of 2026-08-15, excl. VAT)");
  expect(await valueOf(program.module.attachCommand!)).toBe(
    "ssh -t agent@agentbox-web-app tmux -L agentbox attach -t claude",
  );
  expect(await pulumi.isSecret(program.module.userData!)).toBe(true);
});
