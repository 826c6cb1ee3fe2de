import type * as pulumi from "@pulumi/pulumi";

/** What every cloud's host module receives: already validated, already resolved to that cloud's names. */
export interface HostArgs {
  /** Base for child resource names (`${name}-server`, ...). */
  name: string;
  /** The name the cloud shows for the server and its companions: `<project>-<stack>`, one DNS label. */
  cloudName: string;
  location: string;
  serverType: string;
  image: string;
  /** Public key registered with the cloud so it mails no root password (see placeholderSshKey). */
  cloudSshPublicKey: string;
  /** CIDRs allowed to reach SSH on the public address; empty = no inbound at all. */
  allowSshFrom: readonly string[];
  userData: pulumi.Output<string>;
  /** Who owns what: project and stack, for the cloud's console and for cleaning up by hand. */
  labels: { project: string; stack: string };
}

export interface HostResult {
  serverId: pulumi.Output<string>;
  ipv4: pulumi.Output<string>;
  ipv6: pulumi.Output<string>;
}

/** One per cloud: creates SSH key, firewall and server as children of `parent`. */
export type Host = (args: HostArgs, parent: pulumi.Resource) => HostResult;
