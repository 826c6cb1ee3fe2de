import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import { renderCloudConfig } from "../cloud-init/render";
import { boxSpecOf } from "../components/boxSpec";
import { placeholderSshKey } from "../components/cloudSshKey";
import { type AgentBoxConfig, defaultHostname, parseConfig } from "../components/config";
import { hetznerLabel } from "../components/hosts/hetzner";
import { volumeName } from "../components/hosts/types";
import { SSH_KEY } from "./stacks";

// One stack per project: two stacks of the same project, in one cloud account and one tailnet, with the same
// user's key. Everything the cloud or the tailnet keys on must differ; the program's own mocks tests cover one stack
// at a time (Pulumi's mocks are process-wide), so this compares what each stack would hand the providers.
const raw = { sshPublicKeys: JSON.stringify([SSH_KEY]), volumeGb: "20" };
const stacks = ["web-app", "data-pipeline"].map((stack) => parseConfig(raw, { project: "agentbox", stack }));

function cloudFacing(config: AgentBoxConfig) {
  const doc = parse(renderCloudConfig(boxSpecOf(config, { tailnetKey: "tskey-auth-x" }))) as {
    write_files: { path: string; content: string }[];
  };
  const boxEnv = doc.write_files.find((f) => f.path === "/etc/agentbox/box.env")!.content;
  return {
    serverName: defaultHostname(config.project, config.stack),
    sshKeyName: defaultHostname(config.project, config.stack),
    sshKey: placeholderSshKey(config.project, config.stack, config.sshPublicKeys[0]!),
    stackLabel: hetznerLabel(config.stack),
    volumeName: volumeName(defaultHostname(config.project, config.stack)),
    tailnetHostname: /^TAILSCALE_HOSTNAME=(.*)$/m.exec(boxEnv)![1],
  };
}

describe("two stacks side by side", () => {
  const [a, b] = stacks.map(cloudFacing);

  test("each gets its own server, firewall, SSH key and volume names, labels and tailnet hostname", () => {
    expect(a).toMatchObject({
      serverName: "agentbox-web-app",
      tailnetHostname: "agentbox-web-app",
      stackLabel: "web-app",
      volumeName: "agentbox-web-app-home",
    });
    expect(b).toMatchObject({
      serverName: "agentbox-data-pipeline",
      tailnetHostname: "agentbox-data-pipeline",
      stackLabel: "data-pipeline",
      volumeName: "agentbox-data-pipeline-home",
    });
    for (const key of Object.keys(a!) as (keyof typeof a)[]) expect(a![key], key).not.toBe(b![key]);
  });

  test("the same user key still gives each stack a cloud SSH key of its own (clouds refuse duplicates)", () => {
    expect(a!.sshKey).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+=* agentbox-agentbox-web-app-no-private-key$/);
    expect(a!.sshKey.split(" ")[1]).not.toBe(b!.sshKey.split(" ")[1]);
    // and the key is stable: a second `pulumi up` does not replace it
    expect(placeholderSshKey("agentbox", "web-app", SSH_KEY)).toBe(a!.sshKey);
  });
});

test("volume names fit both clouds' 64 characters and stay distinct for long stack names", () => {
  const long = (s: string) =>
    volumeName(defaultHostname("a-rather-long-project-name", `${s}-with-a-long-stack-name-x`));
  for (const name of [long("one"), long("two")]) expect(name.length).toBeLessThanOrEqual(64);
  expect(long("one")).not.toBe(long("two"));
});
