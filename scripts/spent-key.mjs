// A tailnet key minted for a server that was never created (a failed or interrupted `up`: capacity, quota, Ctrl-C)
// stays in the state with its one-hour life, and the engine would put it, expired, into the next try's user-data:
// that box would never join the tailnet. `recreateIfInvalid: "always"` is no way out: a key spent by the box it
// was minted for is invalid too, and a new one would change the user-data of that running box and replace it.
// So the wrappers look before `up`: a tailnet key that has expired (or soon will) while the stack holds no server
// is replaced by that `up`, which then creates the server with a fresh one. A running box is never touched.

/** The key must still be valid this long when the new server boots and joins. */
export const KEY_MARGIN_MS = 15 * 60 * 1000;

const SERVER_TYPES = new Set(["hcloud:index/server:Server", "digitalocean:index/droplet:Droplet"]);
const KEY_TYPE = "tailscale:index/tailnetKey:TailnetKey";

/**
 * URNs of the tailnet keys to replace, from `pulumi stack export`'s JSON (or its parsed object): those whose
 * expiresAt is past or within KEY_MARGIN_MS of `now`, when no server or droplet is in the state.
 */
export function spentKeyReplacements(exported, now = Date.now()) {
  const doc = typeof exported === "string" ? JSON.parse(exported || "{}") : (exported ?? {});
  const resources = doc.deployment?.resources ?? [];
  if (resources.some((r) => SERVER_TYPES.has(r.type))) return [];
  return resources
    .filter((r) => r.type === KEY_TYPE)
    .filter((r) => {
      const at = Date.parse(r.outputs?.expiresAt ?? "");
      return Number.isNaN(at) || at - now < KEY_MARGIN_MS;
    })
    .map((r) => r.urn);
}
