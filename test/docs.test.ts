import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, test } from "vitest";
import { parse } from "yaml";
import { CONFIG_KEYS, DEFAULT_CLAUDE_CODE_VERSION, SECRET_KEYS } from "../components/config";

// Docs drift: every key the program reads is documented in Pulumi.yaml's template and in the README's table.
const root = join(__dirname, "..");
const project = parse(readFileSync(join(root, "Pulumi.yaml"), "utf8")) as {
  name: string;
  template: { config: Record<string, { description: string; default?: string; secret?: boolean }> };
};
const readme = readFileSync(join(root, "README.md"), "utf8");

test("Pulumi.yaml's template prompts for exactly the keys the program reads, plus the providers' tokens", () => {
  const agentboxKeys = Object.keys(project.template.config)
    .filter((k) => k.startsWith("agentbox:"))
    .map((k) => k.slice("agentbox:".length));
  expect(agentboxKeys.sort()).toEqual([...CONFIG_KEYS].sort());
  expect(Object.keys(project.template.config).filter((k) => !k.startsWith("agentbox:"))).toEqual([
    "hcloud:token",
    "digitalocean:token",
    "tailscale:apiKey",
  ]);
});

test.each(Object.entries(project.template.config))("template %s has a description and a default", (key, entry) => {
  expect(entry.description.length).toBeGreaterThan(10);
  if (key !== "agentbox:sshPublicKeys") expect(entry).toHaveProperty("default");
  const bare = key.slice("agentbox:".length) as (typeof SECRET_KEYS)[number];
  if (SECRET_KEYS.includes(bare) || !key.startsWith("agentbox:")) expect(entry.secret).toBe(true);
});

test("the template pins the same Claude Code version as the code", () => {
  expect(project.template.config["agentbox:claudeCodeVersion"]!.default).toBe(DEFAULT_CLAUDE_CODE_VERSION);
  expect(readme).toMatch(new RegExp(`^\\| \`claudeCodeVersion\` +\\| \`${DEFAULT_CLAUDE_CODE_VERSION}\` +\\|`, "m"));
});

test.each([...CONFIG_KEYS])("the README's configuration table documents %s", (key) => {
  expect(readme).toMatch(new RegExp(`^\\| \`${key}\` +\\|`, "m"));
});

test("the project is named as the program's config namespace", () => {
  expect(project.name).toBe("agentbox");
});
