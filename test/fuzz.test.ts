import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as fc from "fast-check";
import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import { buildCloudConfig, compressedCloudConfig, renderCloudConfig } from "../cloud-init/render";
import { boxSecretsOf, boxSpecOf } from "../components/boxSpec";
import { CONFIG_KEYS, ConfigError, type ConfigKey, SECRET_KEYS, cidrProblem, parseConfig } from "../components/config";
import { SSH_KEY } from "./stacks";

// Hostile and sloppy input: every key gets strings built to break things (shell and YAML metacharacters, newlines,
// NUL, unicode, path traversal, very long values). Each must either be refused with a clear message, or, when
// accepted, reach the box only as data: the document reads back as built, and the env files read back literally.

const ctx = { project: "agentbox", stack: "fuzz" };
const ok = { sshPublicKeys: JSON.stringify([SSH_KEY]) };

const NASTY = [
  ..."$`\"'\\;|&<>(){}[]*?!#~%^=:,\n\r\t\0 ",
  "../",
  "..",
  "/",
  "- ",
  ": ",
  "$(id)",
  "`id`",
  "'; rm -rf / #",
  "\u202e",
  "é",
  "😀",
  "\u0000",
  "yes",
  "no",
  "0600",
  "~",
  "null",
  "tag:",
  "ssh-ed25519 ",
  "0.0.0.0/0",
  "::/0",
];
const nastyString = fc.oneof(
  fc.array(fc.constantFrom(...NASTY), { maxLength: 12 }).map((parts) => parts.join("")),
  fc.string({ unit: "binary", maxLength: 80 }),
  fc
    .tuple(fc.string({ maxLength: 20 }), fc.constantFrom(...NASTY), fc.string({ maxLength: 20 }))
    .map((p) => p.join("")),
  fc.string({ minLength: 1000, maxLength: 5000 }),
);

// Secret values carry markers, in a token's alphabet, around and inside the hostile part, so that a message that
// echoed any of it would show one; the plain hostile strings are tried as well
const LEAK_MARKER = /Qx7mZ|Kv3pW/;
const markedString = fc.oneof(
  nastyString,
  nastyString.map((v) => `Qx7mZ${v}Kv3pW`),
  fc.tuple(nastyString, nastyString).map(([a, b]) => `sk-ant-oat01-${a}Qx7mZ${b}Kv3pW`),
);

function tryParse(raw: Record<string, string>) {
  try {
    return { config: parseConfig(raw, ctx) };
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return { error: e };
  }
}

/** Every line of every write_files entry that is a KEY=VALUE env file, as pairs. */
function envEntries(userData: string): [string, string][] {
  const doc = parse(userData, { version: "1.1" }) as { write_files: { path: string; content: string }[] };
  return doc.write_files
    .filter((f) => f.path.endsWith(".env"))
    .flatMap((f) => f.content.split("\n").filter((l) => l !== ""))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]);
}

describe.each(CONFIG_KEYS.filter((k) => k !== "sshPublicKeys"))("agentbox:%s with hostile values", (key: ConfigKey) => {
  test("is refused with the key and a fix, or reaches the box only as data", () => {
    fc.assert(
      fc.property((SECRET_KEYS as readonly string[]).includes(key) ? markedString : nastyString, (value) => {
        const result = tryParse({ ...ok, [key]: value });
        if (result.error) {
          for (const problem of result.error.problems) {
            expect(problem).toMatch(/^(agentbox|hcloud|digitalocean|tailscale):[A-Za-z]+(\[\d+\])?: /);
            expect(problem).toContain("Fix:");
            // a secret's value is never echoed, not even in part: the markers around it are not in any message
            // (checking for the value itself fails on chance: "valu" is in every message that says "value")
            if ((SECRET_KEYS as readonly string[]).includes(key)) expect(problem).not.toMatch(LEAK_MARKER);
          }
          return;
        }
        const c = result.config!;
        const spec = boxSpecOf(c, { ...boxSecretsOf(c), tailnetKey: "tskey-auth-fuzz" });
        const text = renderCloudConfig(spec, { readable: true });
        // YAML: the document reads back exactly as it was built, whatever the values held (and so does what the
        // cloud receives, with its large files compressed)
        expect(parse(text, { version: "1.1" })).toEqual(buildCloudConfig(spec));
        expect(parse(renderCloudConfig(spec), { version: "1.1" })).toEqual(compressedCloudConfig(spec));
        // env files: one KEY=VALUE a line; no value can start a second entry
        for (const [k, v] of envEntries(text)) {
          expect(k).toMatch(/^[A-Z_][A-Z0-9_]*$/);
          expect(v).not.toMatch(/[\r\n\0]/);
        }
      }),
      { numRuns: 150 },
    );
  });
});

test("sshPublicKeys: hostile entries are refused by index, or land only in authorized_keys lists", () => {
  fc.assert(
    fc.property(fc.array(nastyString, { minLength: 1, maxLength: 3 }), (keys) => {
      const result = tryParse({ sshPublicKeys: JSON.stringify(keys) });
      if (result.error) {
        for (const problem of result.error.problems) {
          expect(problem).toMatch(/^agentbox:sshPublicKeys(\[\d+\])?: /);
          expect(problem).toContain("Fix:");
        }
        return;
      }
      const spec = boxSpecOf(result.config!, {});
      const text = renderCloudConfig(spec, { readable: true });
      expect(parse(text, { version: "1.1" })).toEqual(buildCloudConfig(spec));
      for (const k of result.config!.sshPublicKeys) expect(k).not.toMatch(/[\r\n\0]/);
    }),
    { numRuns: 200 },
  );
});

test("accepted values round-trip through the box's env-file reader literally, with no side effect", () => {
  // values that pass validation for the free-text keys that end up in box.env
  const accepted: string[] = [];
  fc.assert(
    fc.property(
      fc.constantFrom<ConfigKey>("repoUrl", "repoBranch", "tailscaleHostname", "claudeOauthToken", "user"),
      nastyString,
      (key, value) => {
        const result = tryParse({ ...ok, [key]: value });
        if (result.config) accepted.push(value.trim());
      },
    ),
    { numRuns: 400 },
  );
  const samples = [...accepted, "$(touch pwned)", "`touch pwned`", "a'b\"c\\d", "x;touch pwned", "v=w=x", "~/../x"];
  const dir = mkdtempSync(join(tmpdir(), "agentbox-fuzz-env-"));
  writeFileSync(join(dir, "env"), samples.map((v, i) => `V${i}=${v}\n`).join(""));
  const lib = join(__dirname, "..", "cloud-init", "files", "lib.sh");
  const script = `. "$1"; agentbox_load_env "$2/env"; for ((i = 0; i < $3; i++)); do v=V$i; printf '%s\\0' "\${!v}"; done`;
  const out = execFileSync("bash", ["-c", script, "fuzz", lib, dir, String(samples.length)], {
    cwd: dir,
    encoding: "utf8",
  });
  expect(out.split("\0").slice(0, -1)).toEqual(samples);
  expect(execFileSync("ls", ["-A", dir], { encoding: "utf8" })).toBe("env\n");
});

describe("CIDRs", () => {
  // an independent oracle: Node's own address parser and BigInt arithmetic
  const oracle = (cidr: string): boolean => {
    const m = /^([^/\s]+)\/(\d{1,3})$/.exec(cidr);
    if (!m) return false;
    const [, addr = "", p = ""] = m;
    const family = isIP(addr);
    if (family === 0 || (family === 6 && addr.includes("."))) return false;
    const bits = family === 4 ? 32 : 128;
    const prefix = Number(p);
    if (prefix > bits) return false;
    let value = 0n;
    if (family === 4) for (const o of addr.split(".")) value = (value << 8n) | BigInt(o);
    else {
      const [head = "", tail] = addr.split("::");
      const hs = head ? head.split(":") : [];
      const ts = tail ? tail.split(":") : [];
      const groups = [...hs, ...Array<string>(8 - hs.length - ts.length).fill("0"), ...ts];
      for (const g of groups) value = (value << 16n) | BigInt(parseInt(g, 16));
    }
    const hostMask = (1n << BigInt(bits - prefix)) - 1n;
    return (value & hostMask) === 0n;
  };
  const octet = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 256, max: 999 }));
  const v4 = fc
    .tuple(octet, octet, octet, octet, fc.integer({ min: 0, max: 40 }))
    .map(([a, b, c, d, p]) => `${a}.${b}.${c}.${d}/${p}`);
  const v6 = fc
    .tuple(
      fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 8 }),
      fc.integer({ min: 0, max: 140 }),
    )
    .map(([gs, p]) => `${gs.map((g) => g.toString(16)).join(":")}${gs.length < 8 ? "::" : ""}/${p}`);

  test.each([
    ["IPv4", v4],
    ["IPv6", v6],
  ])("%s: cidrProblem agrees with Node's parser and BigInt masks", (_, arb) => {
    fc.assert(
      fc.property(arb, (cidr) => {
        expect(cidrProblem(cidr) === undefined).toBe(oracle(cidr));
      }),
      { numRuns: 2000 },
    );
  });
});
