import type * as pulumi from "@pulumi/pulumi";

/** What every cloud's host module receives: already validated, already resolved to that cloud's names. */
export interface HostArgs {
  /** Base for child resource names (`${name}-server`, ...). */
  name: string;
  /** The name the cloud shows for the server and its companions: `<project>-<stack>` (and the box's name, see boxIdentity), one DNS label. */
  cloudName: string;
  location: string;
  serverType: string;
  image: string;
  /** Public key registered with the cloud so it mails no root password (see placeholderSshKey). */
  cloudSshPublicKey: string;
  /** CIDRs allowed to reach SSH on the public address; empty = no inbound at all. */
  allowSshFrom: readonly string[];
  userData: pulumi.Output<string>;
  /** Who owns what: project and stack (and the box, when a program has several), for the cloud's console. */
  labels: { project: string; stack: string; box?: string };
  /** A persistent volume for the agent's home: created protected (kept by `destroy --exclude-protected`). */
  volume?: { sizeGb: number };
  /** Resources the server must come after (and, on destroy, be deleted before). */
  serverDependsOn?: pulumi.Resource[];
  /**
   * Settles (to no resources) once secrets given as Outputs have passed the check, and fails with its one error
   * otherwise: every resource depends on it, so a bad secret creates nothing and is reported once.
   */
  checked?: pulumi.Output<pulumi.Resource[]>;
}

export interface HostResult {
  server: pulumi.Resource;
  serverId: pulumi.Output<string>;
  volumeId?: pulumi.Output<string>;
  /** The volume's attachment to the server: what must not be deleted before the agent let go of its home. */
  volumeAttachment?: pulumi.Resource;
  ipv4: pulumi.Output<string>;
  ipv6: pulumi.Output<string>;
}

/** One per cloud: creates SSH key, firewall and server (and volume) as children of `parent`. */
export type Host = (args: HostArgs, parent: pulumi.Resource) => HostResult;

/** The volume's name in the cloud: the box's name plus "-home", within both clouds' 64 characters. */
export const volumeName = (cloudName: string) => `${cloudName.slice(0, 58).replace(/-$/, "")}-home`;
