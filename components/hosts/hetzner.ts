import * as hcloud from "@pulumi/hcloud";
import type * as pulumi from "@pulumi/pulumi";
import { type Host, volumeName } from "./types";

/** Where a Hetzner volume's block device shows up on the server (one volume per box: the id is not needed). */
export const HETZNER_VOLUME_GLOB = "/dev/disk/by-id/scsi-0HC_Volume_*";

/** Hetzner label values: at most 63 of [a-zA-Z0-9._-], starting and ending alphanumeric. */
export function hetznerLabel(value: string): string {
  return (
    value
      .replace(/[^a-zA-Z0-9._-]/g, "-")
      .slice(0, 63)
      .replace(/^[^a-zA-Z0-9]+|[^a-zA-Z0-9]+$/g, "") || "none"
  );
}

export const hetznerHost: Host = (args, parent) => {
  // every resource waits for the check of secrets given as Outputs, when there is one (see HostArgs.checked)
  const opts = { parent, ...(args.checked ? { dependsOn: args.checked } : {}) };
  const after = (deps: pulumi.Resource[]) => (args.checked ? args.checked.apply(() => deps) : deps);
  const labels = {
    "managed-by": "agentbox",
    "agentbox-project": hetznerLabel(args.labels.project),
    "agentbox-stack": hetznerLabel(args.labels.stack),
    ...(args.labels.box ? { "agentbox-box": hetznerLabel(args.labels.box) } : {}),
  };

  let volume: hcloud.Volume | undefined;
  if (args.volume) {
    // Registered first: a change that would replace this protected volume stops the update before the server is
    // touched. Created beside the server, not before it (the box waits for the device): no extra step on the
    // critical path. Protected: `pulumi destroy --exclude-protected` keeps it, and plain `pulumi destroy` refuses
    // to delete it. Name, size and labels change in place (only `location` forces a new hcloud_volume), so a stack
    // or project rename needs no ignoreChanges here.
    volume = new hcloud.Volume(
      `${args.name}-volume`,
      { name: volumeName(args.cloudName), size: args.volume.sizeGb, location: args.location, labels },
      { ...opts, protect: true },
    );
  }

  // Hetzner refuses a second key with a name or fingerprint the project already has (uniqueness_error), and the
  // bridge replaces this Plugin-Framework resource create-first: delete the old key first. The server that names
  // it is replaced too (ssh_keys forces a new server) and, deleted before replace as well, goes before it.
  const sshKey = new hcloud.SshKey(
    `${args.name}-ssh-key`,
    { name: args.cloudName, publicKey: args.cloudSshPublicKey, labels },
    { ...opts, deleteBeforeReplace: true },
  );

  // Hetzner firewalls deny all inbound traffic that no rule allows, and allow all outbound when there are no
  // outbound rules. Tailscale needs no inbound rule: it connects out and traverses NAT (an inbound UDP 41641 rule
  // would only turn relayed connections into direct ones), so by default the box accepts nothing from outside.
  const rules: hcloud.types.input.FirewallRule[] = args.allowSshFrom.length
    ? [
        {
          direction: "in",
          protocol: "tcp",
          port: "22",
          sourceIps: [...args.allowSshFrom],
          description: "SSH (agentbox:allowSshFrom)",
        },
      ]
    : [];
  // No deleteBeforeReplace: every input of hcloud_firewall changes in place (nothing ForceNew), so it is never replaced.
  const firewall = new hcloud.Firewall(`${args.name}-firewall`, { name: args.cloudName, rules, labels }, opts);

  const server = new hcloud.Server(
    `${args.name}-server`,
    {
      name: args.cloudName,
      serverType: args.serverType,
      image: args.image,
      location: args.location,
      userData: args.userData,
      sshKeys: [sshKey.id],
      // hcloud wants firewall ids as numbers; mocks and the engine hand them over as strings.
      firewallIds: [firewall.id.apply(Number)],
      publicNets: [{ ipv4Enabled: true, ipv6Enabled: true }],
      labels,
      // An ACPI shutdown before the delete, but the provider waits only ~31 s for it (5 fixed retries, which
      // customTimeouts do not change), then deletes hard. What keeps the home intact is the box's release before
      // delete (components/agentBox.ts): the engine runs it before the volume is detached and the server deleted.
      shutdownBeforeDeletion: true,
    },
    // Hetzner refuses a second server with a name in use (uniqueness_error): a replacement deletes the old one first.
    { ...opts, dependsOn: after(args.serverDependsOn ?? []), deleteBeforeReplace: true },
  );

  let volumeId: pulumi.Output<string> | undefined;
  let volumeAttachment: pulumi.Resource | undefined;
  if (volume) {
    // A volume is attached to one server at a time (volume_already_attached): the attachment for a replaced
    // server is made only once the old one is gone.
    volumeAttachment = new hcloud.VolumeAttachment(
      `${args.name}-volume-attachment`,
      { serverId: server.id.apply(Number), volumeId: volume.id.apply(Number), automount: false },
      { ...opts, deleteBeforeReplace: true },
    );
    volumeId = volume.id;
  }

  return {
    server,
    serverId: server.id,
    volumeId,
    volumeAttachment,
    ipv4: server.ipv4Address,
    ipv6: server.ipv6Address,
  };
};
