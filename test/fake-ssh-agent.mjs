// An ssh-agent that holds the given public keys and signs nothing: enough for `ssh-add -L`, which is all that
// `pulumi up`'s SSH check asks of it (components/sshAccess.ts). It answers the agent protocol's identities request
// (SSH_AGENTC_REQUEST_IDENTITIES 11 → SSH_AGENT_IDENTITIES_ANSWER 12) and fails everything else (SSH_AGENT_FAILURE
// 5). A process of its own: the check runs ssh-add synchronously, which would block an agent in the same process.
// usage: node fake-ssh-agent.mjs SOCKET PUBLIC_KEY...   (stops when its parent does)
import { Buffer } from "node:buffer";
import { rmSync } from "node:fs";
import { createServer } from "node:net";
import { dirname } from "node:path";
import process from "node:process";

const [socket, ...keys] = process.argv.slice(2);
const u32 = (n) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const string = (b) => Buffer.concat([u32(b.length), b]);
const identities = Buffer.concat([
  Buffer.from([12]),
  u32(keys.length),
  ...keys.map((k) => {
    const [, blob, ...comment] = k.trim().split(/\s+/);
    return Buffer.concat([string(Buffer.from(blob ?? "", "base64")), string(Buffer.from(comment.join(" ")))]);
  }),
]);
createServer((c) => {
  let buf = Buffer.alloc(0);
  c.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
      const type = buf[4];
      buf = buf.subarray(4 + buf.readUInt32BE(0));
      const answer = type === 11 ? identities : Buffer.from([5]);
      c.write(Buffer.concat([u32(answer.length), answer]));
    }
  });
}).listen(socket, () => process.send?.("listening"));
// the test process that started it is its only reason to live; its socket's folder goes with it
process.on("disconnect", () => {
  rmSync(dirname(socket), { recursive: true, force: true });
  process.exit(0);
});
