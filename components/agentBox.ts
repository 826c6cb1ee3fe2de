import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import * as tailscale from "@pulumi/tailscale";
import { TMUX_SESSION, TMUX_SOCKET, renderCloudConfig } from "../cloud-init/render";
import type { Cloud } from "./catalogue";
import { boxSpecOf } from "./boxSpec";
import { placeholderSshKey } from "./cloudSshKey";
import { type AgentBoxConfig, defaultHostname } from "./config";
import { digitalOceanHost } from "./hosts/digitalocean";
import { hetznerHost } from "./hosts/hetzner";
import type { Host } from "./hosts/types";

export interface AgentBoxArgs {
  /** The validated stack configuration (see components/config.ts). */
  config: AgentBoxConfig;
  /** Claude Code's credential as a Pulumi secret, when the stack sets one. */
  agentAuth?: pulumi.Output<string>;
}

/** A single-use Tailscale key is valid this long: enough for a slow first boot, useless to anyone who reads it later. */
export const TAILNET_KEY_EXPIRY_SECONDS = 3600;
/** Stands in for the tailnet key in the copy of the user-data that names the key (see tailnetKeyDescription). */
const KEY_PLACEHOLDER = "<tailnet key>";

export function hostFor(cloud: Cloud): Host {
  switch (cloud) {
    case "hetzner":
      return hetznerHost;
    case "digitalocean":
      return digitalOceanHost;
    default: {
      const never: never = cloud;
      throw new Error(`no host module for ${String(never)}`);
    }
  }
}

/**
 * The tailnet key's description names the box it was minted for: a hash of everything that goes into the
 * user-data except the key itself. Why: the key is single-use and spent by the first boot. If anything that
 * replaces the server changes (user-data, image, location), the description changes with it, which replaces the
 * key, so the new server gets a fresh key instead of the spent one. Nothing else about the key changes on a later
 * `pulumi up`: `recreateIfInvalid: "never"` keeps the provider from minting a new key merely because the old one
 * was used or has expired, which would change the user-data and replace a running box.
 */
export function tailnetKeyDescription(config: AgentBoxConfig, agentAuth: string | undefined): string {
  const withoutKey = boxSpecOf(config, { agentAuth, tailnetKey: KEY_PLACEHOLDER });
  const digest = createHash("sha256")
    .update(renderCloudConfig(withoutKey))
    .update(`\0${config.cloud}\0${config.image}\0${config.location}`)
    .digest("hex")
    .slice(0, 16);
  return `agentbox ${digest}`;
}

/**
 * One always-on agent box: the cloud's SSH key, firewall and server, plus a tailnet key when Tailscale is on.
 * Provider-agnostic; the cloud's own module (components/hosts) owns its quirks.
 */
export class AgentBox extends pulumi.ComponentResource {
  public readonly cloud: pulumi.Output<string>;
  public readonly serverType: pulumi.Output<string>;
  public readonly memoryGb: pulumi.Output<number>;
  public readonly monthlyPrice: pulumi.Output<string>;
  public readonly ipv4: pulumi.Output<string>;
  public readonly ipv6: pulumi.Output<string>;
  public readonly tailnetHostname: pulumi.Output<string | undefined>;
  public readonly sshCommand: pulumi.Output<string>;
  public readonly moshCommand: pulumi.Output<string>;
  public readonly attachCommand: pulumi.Output<string>;
  /** The rendered #cloud-config (a secret: it carries the credentials). */
  public readonly userData: pulumi.Output<string>;

  constructor(name: string, args: AgentBoxArgs, opts?: pulumi.ComponentResourceOptions) {
    super("agentbox:index:AgentBox", name, {}, opts);
    const { config } = args;

    const auth = args.agentAuth ?? pulumi.output<string | undefined>(undefined);

    let userData: pulumi.Output<string>;
    if (config.tailscale.enabled) {
      const key = new tailscale.TailnetKey(
        `${name}-tailnet-key`,
        {
          reusable: false,
          ephemeral: false,
          preauthorized: true,
          tags: config.tailscale.tags,
          expiry: TAILNET_KEY_EXPIRY_SECONDS,
          recreateIfInvalid: "never",
          description: auth.apply((a) => tailnetKeyDescription(config, a)),
        },
        { parent: this },
      );
      userData = pulumi
        .all([auth, key.key])
        .apply(([a, k]) => renderCloudConfig(boxSpecOf(config, { agentAuth: a, tailnetKey: k })));
    } else {
      userData = auth.apply((a) => renderCloudConfig(boxSpecOf(config, { agentAuth: a })));
    }
    // Carries the agent's credential and the tailnet key: secret in state and outputs, whatever fed it.
    this.userData = pulumi.secret(userData);

    const host = hostFor(config.cloud)(
      {
        name,
        cloudName: defaultHostname(config.project, config.stack),
        location: config.location,
        serverType: config.serverType.name,
        image: config.image,
        cloudSshPublicKey: placeholderSshKey(config.project, config.stack, config.sshPublicKeys[0] ?? ""),
        allowSshFrom: config.allowSshFrom,
        userData: this.userData,
        labels: { project: config.project, stack: config.stack },
      },
      this,
    );

    const t = config.serverType;
    this.cloud = pulumi.output(config.cloud);
    this.serverType = pulumi.output(t.name);
    this.memoryGb = pulumi.output(t.memoryGb);
    this.monthlyPrice = pulumi.output(
      `${t.monthlyPrice.toFixed(2)} ${config.catalogue.currency}/month (catalogue of ${config.catalogue.asOf}, excl. VAT)`,
    );
    this.ipv4 = host.ipv4;
    this.ipv6 = host.ipv6;
    this.tailnetHostname = pulumi.output(config.tailscale.enabled ? config.tailscale.hostname : undefined);

    // Over the tailnet by MagicDNS name when Tailscale is on, else the public address (allowSshFrom must cover you).
    const address = config.tailscale.enabled ? pulumi.output(config.tailscale.hostname) : host.ipv4;
    const attach = `tmux -L ${TMUX_SOCKET} attach -t ${TMUX_SESSION}`;
    this.sshCommand = pulumi.interpolate`ssh ${config.user}@${address}`;
    this.moshCommand = pulumi.interpolate`mosh ${config.user}@${address} -- ${attach}`;
    this.attachCommand = pulumi.interpolate`ssh -t ${config.user}@${address} ${attach}`;

    this.registerOutputs({
      cloud: this.cloud,
      serverType: this.serverType,
      memoryGb: this.memoryGb,
      monthlyPrice: this.monthlyPrice,
      ipv4: this.ipv4,
      ipv6: this.ipv6,
      tailnetHostname: this.tailnetHostname,
      sshCommand: this.sshCommand,
      moshCommand: this.moshCommand,
      attachCommand: this.attachCommand,
      userData: this.userData,
    });
  }
}
