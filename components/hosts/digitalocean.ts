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
  const opts = { parent };
  const tags = [
    "agentbox",
    digitalOceanTag(`agentbox-project:${args.labels.project}`),
    digitalOceanTag(`agentbox-stack:${args.labels.stack}`),
  ];

  const sshKey = new digitalocean.SshKey(
    `${args.name}-ssh-key`,
    { name: args.cloudName, publicKey: args.cloudSshPublicKey },
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
      tags,
      // Stops the droplet cleanly (Claude Code saves its conversation) before deleting it.
      gracefulShutdown: true,
    },
    { ...opts, dependsOn: args.serverDependsOn },
  );

  let volumeId: pulumi.Output<string> | undefined;
  let volumeAttachment: pulumi.Resource | undefined;
  if (args.volume) {
    // Beside the droplet, not before it (the box waits for the device); protected, so that
    // `pulumi destroy --exclude-protected` keeps it and plain `pulumi destroy` refuses to delete it.
    const volume = new digitalocean.Volume(
      `${args.name}-volume`,
      {
        name: volumeName(args.cloudName),
        region: args.location,
        size: args.volume.sizeGb,
        description: `agentbox home of ${args.labels.project}/${args.labels.stack}`,
        tags,
      },
      { ...opts, protect: true },
    );
    volumeAttachment = new digitalocean.VolumeAttachment(
      `${args.name}-volume-attachment`,
      { dropletId: droplet.id.apply(Number), volumeId: volume.id },
      opts,
    );
    volumeId = volume.id;
  }

  // A DigitalOcean firewall denies inbound traffic that no rule allows, and ALSO denies outbound traffic unless
  // rules allow it, so outbound is opened explicitly. Tailscale needs no inbound rule: it connects out and traverses
  // NAT (inbound UDP 41641 would only turn relayed connections into direct ones).
  new digitalocean.Firewall(
    `${args.name}-firewall`,
    {
      name: args.cloudName,
      // droplet ids are numbers for the firewall, strings everywhere else
      dropletIds: [droplet.id.apply(Number)],
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

  return { server: droplet, serverId: droplet.id, volumeId, volumeAttachment, ipv4: droplet.ipv4Address, ipv6: droplet.ipv6Address };
};
