import { stringify } from "yaml";
import { expect, test } from "vitest";
import { SECRET_KEYS, parseConfig } from "../components/config";
import { rawConfigFromStackFile } from "../scripts/render";

test("npm run render reads a stack whose every secret is encrypted: each stand-in has the form its key is checked for", () => {
  // a stack that sets every secret key, as `pulumi config set --secret` stores them
  const secure = Object.fromEntries(SECRET_KEYS.map((k) => [`agentbox:${k}`, { secure: "v1:AAAA:bm90" }]));
  delete secure["agentbox:anthropicApiKey"]; // one Claude Code credential, not both
  const text = stringify({
    config: {
      "agentbox:cloud": "digitalocean",
      "agentbox:sshPublicKeys": [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDfZgwWjWTKbEInjqhJiqvBau6HzMb5tnGquuo5R9A7N a@b",
      ],
      "agentbox:approvals": "true",
      ...secure,
    },
  });
  const config = parseConfig(rawConfigFromStackFile(text), { project: "agentbox", stack: "render" });
  expect(config.notify?.url).toMatch(/^https:\/\/ntfy\.invalid\//);
  expect(config.approvals?.url).toMatch(/^https:\/\/ntfy\.invalid\//);
  expect(config.approvals?.url).not.toBe(config.notify?.url);
});
