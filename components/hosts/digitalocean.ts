import * as digitalocean from "@pulumi/digitalocean";
import type * as pulumi from "@pulumi/pulumi";
import { type Host, volumeName } from "./types";

/** Where a DigitalOcean volume's block device shows up on the droplet (one volume per box). */
export const DIGITALOCEAN_VOLUME_GLOB = "/dev/disk/by-id/scsi-0DO_Volume_*";

/** DigitalOcean tags: letters, digits, ":", "-" and "_", at most 255. */
export function digitalOceanTag(value: string): string {
  return value.replace(/[^a-zA-Z0-9:_-]/g, "-").slice(0, 255);
}

const EVERYWHERE = ["0.0.0.0/0", "::/0"];

export const digitalOceanHost: Host = (args, parent) => {
  // every resource waits for the check of secrets given as Outputs, when there is one (see HostArgs.checked)
  const opts = { parent, ...(args.checked ? { dependsOn: args.checked } : {}) };
  const after = (deps: pulumi.Resource[]) => (args.checked ? args.checked.apply(() => deps) : deps);
  const tags = [
    "agentbox",
    digitalOceanTag(`agentbox-project:${args.labels.project}`),
    digitalOceanTag(`agentbox-stack:${args.labels.stack}`),
  ];

  let volume: digitalocean.Volume | undefined;
  if (args.volume) {
    // Registered first: a change that would replace this protected volume stops the update before the droplet is
    // touched. Beside the droplet, not before it (the box waits for the device); protected, so that
    // `pulumi destroy --exclude-protected` keeps it and plain `pulumi destroy` refuses to delete it.
    volume = new digitalocean.Volume(
      `${args.name}-volume`,
      {
        name: volumeName(args.cloudName),
        region: args.location,
        size: args.volume.sizeGb,
        description: `agentbox home of ${[args.labels.project, args.labels.stack, ...(args.labels.box ? [args.labels.box] : [])].join("/")}`,
        tags,
      },
      // name and description force a new digitalocean_volume, which protect refuses: a stack or project rename
      // would stop every later `up`. They keep the values the volume was created with.
      { ...opts, protect: true, ignoreChanges: ["name", "description"] },
    );
  }

  // Deleted before it is replaced, like the droplet that names it (ssh_keys forces a new droplet), which goes first.
  const sshKey = new digitalocean.SshKey(
    `${args.name}-ssh-key`,
    { name: args.cloudName, publicKey: args.cloudSshPublicKey },
    { ...opts, deleteBeforeReplace: true },
  );

  // A DigitalOcean firewall denies inbound traffic that no rule allows, and ALSO denies outbound traffic unless
  // rules allow it, so outbound is opened explicitly. Tailscale needs no inbound rule: it connects out and traverses
  // NAT (inbound UDP 41641 would only turn relayed connections into direct ones).
  // It applies to the droplets with the box's own tag and exists before the droplet, which is created with that
  // tag and depends on it: a firewall attached by droplet id could only follow the droplet (sshd public in
  // between), and destroy would remove it first. No deleteBeforeReplace: every input of digitalocean_firewall
  // changes in place (nothing ForceNew).
  const boxTag = digitalOceanTag(`agentbox-box:${args.cloudName}`);
  const firewall = new digitalocean.Firewall(
    `${args.name}-firewall`,
    {
      name: args.cloudName,
      tags: [boxTag],
      inboundRules: args.allowSshFrom.length
        ? [{ protocol: "tcp", portRange: "22", sourceAddresses: [...args.allowSshFrom] }]
        : [],
      outboundRules: [
        { protocol: "tcp", portRange: "1-65535", destinationAddresses: EVERYWHERE },
        { protocol: "udp", portRange: "1-65535", destinationAddresses: EVERYWHERE },
        { protocol: "icmp", destinationAddresses: EVERYWHERE },
      ],
    },
    opts,
  );

  const droplet = new digitalocean.Droplet(
    `${args.name}-server`,
    {
      name: args.cloudName,
      size: args.serverType,
      image: args.image,
      region: args.location,
      userData: args.userData,
      sshKeys: [sshKey.fingerprint],
      ipv6: true,
      tags: [...tags, boxTag],
      // Stops the droplet cleanly (Claude Code saves its conversation) before deleting it.
      gracefulShutdown: true,
    },
    {
      ...opts,
      dependsOn: after([...(args.serverDependsOn ?? []), firewall]),
      // One droplet per box at a time: the old one goes before its replacement comes.
      deleteBeforeReplace: true,
      // The provider waits this long (its default: 60 s) for the shutdown, then fails the delete and leaves a
      // powered-off droplet that is still billed; the box's units may take 90 s to stop.
      customTimeouts: { delete: "5m" },
    },
  );

  let volumeId: pulumi.Output<string> | undefined;
  let volumeAttachment: pulumi.Resource | undefined;
  if (volume) {
    // A volume is attached to one droplet at a time, and the provider does not retry an attach to a volume that is
    // attached elsewhere: the attachment for a replaced droplet is made only once the old one is gone.
    volumeAttachment = new digitalocean.VolumeAttachment(
      `${args.name}-volume-attachment`,
      { dropletId: droplet.id.apply(Number), volumeId: volume.id },
      { ...opts, deleteBeforeReplace: true },
    );
    volumeId = volume.id;
  }

  return {
    server: droplet,
    serverId: droplet.id,
    volumeId,
    volumeAttachment,
    ipv4: droplet.ipv4Address,
    ipv6: droplet.ipv6Address,
  };
};
