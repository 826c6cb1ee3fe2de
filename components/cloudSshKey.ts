import { createHash } from "node:crypto";

/**
 * The public key agentbox registers with the cloud for one stack.
 *
 * Both clouds want an SSH key when a server is created (without one they mail a root password), but each refuses
 * a second copy of a key it already holds, so the user's own key could serve only one stack per account (and not
 * at all if it was uploaded by hand before). Instead each stack registers its own ed25519 public key, derived by
 * hashing the stack's identity: unique per stack, stable across runs, and without a private half that anybody
 * knows or could compute. It lands in root's authorized_keys, where root login is refused anyway; the user's real
 * keys reach the agent user through cloud-init.
 */
export function placeholderSshKey(project: string, stack: string, firstUserKey: string, box?: string): string {
  // a box of several in one program (see boxIdentity) has a key of its own; the default box keeps its stack's key
  const boxPart = box === undefined ? "" : `\0${box}`;
  const point = createHash("sha256")
    .update(`agentbox cloud key\0${project}\0${stack}\0${firstUserKey}${boxPart}`)
    .digest();
  const field = (b: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const blob = Buffer.concat([field(Buffer.from("ssh-ed25519")), field(point)]);
  return `ssh-ed25519 ${blob.toString("base64")} agentbox-${[project, stack, ...(box === undefined ? [] : [box])].join("-")}-no-private-key`;
}
