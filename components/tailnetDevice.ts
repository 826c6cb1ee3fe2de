/**
 * Removes a box's device(s) from the tailnet, so the next box with the same hostname gets that name and not
 * `<host>-1`.
 *
 * Why hand-written: a Tailscale device outlives its VM (destroying the TailnetKey revokes the key, not the devices
 * that joined with it), and no Pulumi or Terraform Tailscale resource deletes devices; the request for one has been
 * open since 2022. So this is a dynamic resource that calls Tailscale's API itself:
 * - create: deletes the devices with exactly this hostname that are NOT connected (leftovers of an earlier box, e.g.
 *   one destroyed before this resource existed). A connected one is left alone: it may be another live box.
 * - delete: deletes every device with exactly this hostname.
 * - a change of hostname, tailnet or `generation` replaces it, delete before create; a new credential is just stored.
 *
 * Ordering contract: the server depends on this resource, so `pulumi destroy` deletes the server first and its
 * device after it. `generation` changes whenever the server is replaced; deleteBeforeReplace then removes the old
 * box's device, and create cleans up, before the new server exists, so the new box joins under the same name. (With
 * a dependsOn edge alone the engine does not delete the old server before that: the old box leaves the tailnet a
 * moment before it is replaced.)
 *
 * The credential this resource uses is stored in the stack's state (a destroy needs it after the program is gone),
 * as Pulumi secrets. The provider's code is stored there too (serialized), so its functions below may use only
 * globals (fetch) and each other: no imports.
 */
import * as pulumi from "@pulumi/pulumi";

const DEFAULT_TAILSCALE_API_BASE_URL = "https://api.tailscale.com";
/** The tailnet the credential belongs to. */
const DEFAULT_TAILNET = "-";
/** One Tailscale API request may take this long. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Without `connectedToControl` in the listing, a device seen this recently counts as connected. */
const RECENTLY_SEEN_MS = 10 * 60_000;

export type TailscaleAuth = { apiKey: string } | { oauthClientId: string; oauthClientSecret: string };

export interface TailscaleApi {
  /** Scheme and host, e.g. https://api.tailscale.com. */
  baseUrl: string;
  auth: TailscaleAuth;
}

/** The fields of a device in `GET /api/v2/tailnet/{tailnet}/devices` that this module reads. */
export interface TailnetDevice {
  id: string;
  nodeId?: string;
  name?: string;
  hostname: string;
  lastSeen?: string;
  connectedToControl?: boolean;
}

function secretsOf(auth: TailscaleAuth): string[] {
  return "apiKey" in auth ? [auth.apiKey] : [auth.oauthClientId, auth.oauthClientSecret];
}

function redact(text: string, secrets: string[]): string {
  return secrets.filter((s) => s.length > 0).reduce((t, s) => t.split(s).join("<redacted>"), text);
}

/** Tailscale's errors are `{"message": "..."}`; anything else is quoted, shortened. */
async function tailscaleMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { message?: unknown };
    if (typeof body.message === "string") return body.message;
  } catch {
    // not JSON: fall through
  }
  return text.trim().slice(0, 300) || response.statusText || "no message";
}

function fixFor(status: number): string {
  const fallback =
    "Or remove the device in the admin console (Machines) and, if this blocks a destroy, drop this resource from " +
    "the state: `pulumi state delete <urn>` (find the urn with `pulumi stack --show-urns`).";
  if (status === 401) {
    return (
      "The credential was refused: an API access token expires after at most 90 days, so the one stored in the " +
      "state may be stale. Set a fresh tailscale:apiKey (or an OAuth client, which does not expire) and run " +
      "`pulumi up`, which stores it, before destroying. " +
      fallback
    );
  }
  if (status === 403) {
    return (
      "Check that the credential may manage devices: an OAuth client needs the devices:core scope, an API access " +
      "token the rights of an admin. " +
      fallback
    );
  }
  return `Retry; if it persists, check Tailscale's status page. ${fallback}`;
}

/** One request to Tailscale's API; throws an Error that says what failed and what to do, never the credential. */
async function tailscaleRequest(
  baseUrl: string,
  what: string,
  init: { method: string; path: string; headers: Record<string, string>; body?: string },
  secrets: string[],
  allowNotFound: boolean,
): Promise<Response | undefined> {
  const url = baseUrl.replace(/\/+$/, "") + init.path;
  let response: Response;
  try {
    response = await fetch(url, {
      method: init.method,
      headers: init.headers,
      body: init.body,
      redirect: "error",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (e) {
    const err = e as Error & { cause?: { message?: string } };
    const reason = err.name === "TimeoutError" ? `no answer in ${REQUEST_TIMEOUT_MS / 1000} s` : err.message;
    const cause = err.cause?.message ? ` (${err.cause.message})` : "";
    throw new Error(
      redact(`Tailscale API: ${what} failed: ${init.method} ${url}: ${reason}${cause}. ${fixFor(0)}`, secrets),
    );
  }
  if (response.status === 404 && allowNotFound) return undefined;
  if (!response.ok) {
    const message = await tailscaleMessage(response);
    throw new Error(
      redact(
        `Tailscale API: ${what} failed: ${init.method} ${init.path} answered HTTP ${response.status}: ` +
          `${message}. ${fixFor(response.status)}`,
        secrets,
      ),
    );
  }
  return response;
}

/** The bearer token: the API key itself, or a fresh token for the OAuth client (valid for an hour). */
async function bearerToken(api: TailscaleApi): Promise<string> {
  if ("apiKey" in api.auth) return api.auth.apiKey;
  const form = new URLSearchParams({
    client_id: api.auth.oauthClientId,
    client_secret: api.auth.oauthClientSecret,
    grant_type: "client_credentials",
  });
  const response = await tailscaleRequest(
    api.baseUrl,
    "getting an access token for the OAuth client",
    {
      method: "POST",
      path: "/api/v2/oauth/token",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: form.toString(),
    },
    secretsOf(api.auth),
    false,
  );
  const token = ((await response?.json()) as { access_token?: unknown } | undefined)?.access_token;
  if (typeof token !== "string" || token === "") {
    throw new Error("Tailscale API: the OAuth token endpoint answered without an access_token.");
  }
  return token;
}

/** Connected to Tailscale's control server; without that field in the listing, seen in the last few minutes. */
export function isConnected(device: TailnetDevice, now: number = Date.now()): boolean {
  if (typeof device.connectedToControl === "boolean") return device.connectedToControl;
  const seen = device.lastSeen ? Date.parse(device.lastSeen) : NaN;
  // Unknown counts as connected: removing a live device would cut off a running box.
  return Number.isNaN(seen) || now - seen < RECENTLY_SEEN_MS;
}

/**
 * Deletes the tailnet's devices whose hostname is exactly `hostname` and for which `filter` holds; returns them.
 * The hostname is compared here, not by the API, whose own filter need not be exact (`box` must not catch `box-1`).
 * A device that is already gone (404) counts as removed.
 */
export async function removeDevices(
  api: TailscaleApi,
  tailnet: string,
  hostname: string,
  filter: (device: TailnetDevice) => boolean,
): Promise<TailnetDevice[]> {
  const secrets = secretsOf(api.auth);
  const token = await bearerToken(api);
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  const allSecrets = [...secrets, token];
  const listed = await tailscaleRequest(
    api.baseUrl,
    `listing the devices of tailnet ${tailnet}`,
    { method: "GET", path: `/api/v2/tailnet/${encodeURIComponent(tailnet)}/devices`, headers },
    allSecrets,
    false,
  );
  const devices = (((await listed?.json()) as { devices?: TailnetDevice[] } | undefined)?.devices ?? []).filter(
    (d) => d.hostname === hostname && filter(d),
  );
  for (const device of devices) {
    const deviceId = device.nodeId || device.id;
    await tailscaleRequest(
      api.baseUrl,
      `deleting device ${device.name ?? hostname} (${deviceId})`,
      { method: "DELETE", path: `/api/v2/device/${encodeURIComponent(deviceId)}`, headers },
      allSecrets,
      true,
    );
  }
  return devices;
}

/** The provider's view of the inputs: what the engine hands back (plain values, optional ones may be missing). */
export interface TailnetDeviceProps {
  hostname: string;
  tailnet?: string;
  generation?: string;
  apiKey?: string;
  oauthClientId?: string;
  oauthClientSecret?: string;
  apiBaseUrl?: string;
}

/** What create and update store; state written by an earlier version of this code may lack some of it. */
export interface TailnetDeviceOutputs extends TailnetDeviceProps {
  tailnet: string;
  generation: string;
  apiBaseUrl: string;
  /** How many leftover devices create removed. */
  removedAtCreate: number;
}

function apiOf(props: TailnetDeviceProps): TailscaleApi {
  const baseUrl = props.apiBaseUrl || DEFAULT_TAILSCALE_API_BASE_URL;
  if (props.apiKey) return { baseUrl, auth: { apiKey: props.apiKey } };
  if (props.oauthClientId && props.oauthClientSecret) {
    return { baseUrl, auth: { oauthClientId: props.oauthClientId, oauthClientSecret: props.oauthClientSecret } };
  }
  throw new Error(
    "TailnetDeviceCleanup has no Tailscale credential: set tailscale:apiKey, or tailscale:oauthClientId and " +
      "tailscale:oauthClientSecret (an OAuth client with the devices:core scope).",
  );
}

function outputsOf(props: TailnetDeviceProps, removedAtCreate: number): TailnetDeviceOutputs {
  return {
    hostname: props.hostname,
    tailnet: props.tailnet || DEFAULT_TAILNET,
    generation: props.generation ?? "",
    ...(props.apiKey ? { apiKey: props.apiKey } : {}),
    ...(props.oauthClientId ? { oauthClientId: props.oauthClientId } : {}),
    ...(props.oauthClientSecret ? { oauthClientSecret: props.oauthClientSecret } : {}),
    apiBaseUrl: props.apiBaseUrl || DEFAULT_TAILSCALE_API_BASE_URL,
    removedAtCreate,
  };
}

/** Changing one of these means another device: replace (delete the old one's devices first). */
const IDENTITY_KEYS = ["hostname", "tailnet", "generation"] as const;
/** Changing one of these is stored in place. */
const ACCESS_KEYS = ["apiKey", "oauthClientId", "oauthClientSecret", "apiBaseUrl"] as const;

export const tailnetDeviceProvider: pulumi.dynamic.ResourceProvider<
  TailnetDeviceProps,
  TailnetDeviceProps & Partial<TailnetDeviceOutputs>
> = {
  async create(inputs) {
    if (!inputs.hostname) throw new Error("TailnetDeviceCleanup needs a hostname.");
    const outs = outputsOf(inputs, 0);
    const removed = await removeDevices(apiOf(inputs), outs.tailnet, outs.hostname, (d) => !isConnected(d));
    return { id: `${outs.tailnet}/${outs.hostname}`, outs: { ...outs, removedAtCreate: removed.length } };
  },
  async diff(_id, olds, news) {
    const before = outputsOf(olds, 0);
    const after = outputsOf(news, 0);
    const replaces = IDENTITY_KEYS.filter((k) => before[k] !== after[k]);
    const changes = replaces.length > 0 || ACCESS_KEYS.some((k) => before[k] !== after[k]);
    return { changes, replaces, deleteBeforeReplace: replaces.length > 0 };
  },
  async update(_id, olds, news) {
    return { outs: outputsOf(news, olds.removedAtCreate ?? 0) };
  },
  async delete(_id, props) {
    const outs = outputsOf(props, 0);
    await removeDevices(apiOf(props), outs.tailnet, outs.hostname, () => true);
  },
};

export interface TailnetDeviceCleanupArgs {
  /** The box's hostname on the tailnet (`tailscale up --hostname`); compared exactly. */
  hostname: pulumi.Input<string>;
  /**
   * The tailnet's name.
   * @default "-" (the tailnet the credential belongs to)
   */
  tailnet?: pulumi.Input<string>;
  /**
   * Opaque; a change replaces this resource, removing the device again. Pass something that changes whenever the
   * server is replaced.
   * @default ""
   */
  generation?: pulumi.Input<string>;
  /** A Tailscale API access token (stored as a secret). Wins over an OAuth client when both are given. */
  apiKey?: pulumi.Input<string>;
  /** An OAuth client with the devices:core scope (both halves stored as secrets). */
  oauthClientId?: pulumi.Input<string>;
  oauthClientSecret?: pulumi.Input<string>;
  /**
   * Only tests point this elsewhere.
   * @default "https://api.tailscale.com"
   */
  apiBaseUrl?: pulumi.Input<string>;
}

const SECRET_KEYS = ["apiKey", "oauthClientId", "oauthClientSecret"] as const;

/** Deletes the tailnet's device(s) named `hostname`: leftovers at create, all of them at delete. See the top of file. */
export class TailnetDeviceCleanup extends pulumi.dynamic.Resource {
  declare public readonly hostname: pulumi.Output<string>;
  declare public readonly tailnet: pulumi.Output<string>;
  declare public readonly generation: pulumi.Output<string>;
  declare public readonly removedAtCreate: pulumi.Output<number>;

  constructor(name: string, args: TailnetDeviceCleanupArgs, opts?: pulumi.CustomResourceOptions) {
    const secret = (v: pulumi.Input<string> | undefined) => (v === undefined ? undefined : pulumi.secret(v));
    super(
      tailnetDeviceProvider,
      name,
      {
        hostname: args.hostname,
        tailnet: args.tailnet ?? DEFAULT_TAILNET,
        generation: args.generation ?? "",
        apiKey: secret(args.apiKey),
        oauthClientId: secret(args.oauthClientId),
        oauthClientSecret: secret(args.oauthClientSecret),
        apiBaseUrl: args.apiBaseUrl ?? DEFAULT_TAILSCALE_API_BASE_URL,
        removedAtCreate: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), ...SECRET_KEYS] },
      "agentbox",
      "TailnetDeviceCleanup",
    );
  }
}

/**
 * Which Tailscale credential a set of them means: an API key wins over an OAuth client, which needs both halves
 * (`missing` names the one that is not there); undefined when there is neither. Callers pass empty values as unset.
 */
export function chooseTailnetAuth<T>(c: {
  apiKey?: T;
  oauthClientId?: T;
  oauthClientSecret?: T;
}):
  | { apiKey: T }
  | { oauthClientId: T; oauthClientSecret: T }
  | { missing: "oauthClientId" | "oauthClientSecret" }
  | undefined {
  if (c.apiKey !== undefined) return { apiKey: c.apiKey };
  if (c.oauthClientId !== undefined && c.oauthClientSecret !== undefined)
    return { oauthClientId: c.oauthClientId, oauthClientSecret: c.oauthClientSecret };
  if (c.oauthClientId !== undefined) return { missing: "oauthClientSecret" };
  if (c.oauthClientSecret !== undefined) return { missing: "oauthClientId" };
  return undefined;
}

/**
 * The Tailscale credential from stack config (`pulumi.runtime.allConfig()`: raw strings), each key falling back to
 * its environment variable as the Tailscale provider's own keys do. An API key wins over an OAuth client; undefined
 * when there is neither. Half an OAuth client is an error.
 */
export function tailnetCredentials(
  all: Record<string, string>,
  env: NodeJS.ProcessEnv,
): (TailscaleAuth & { tailnet: string }) | undefined {
  // An empty value (Pulumi.yaml's default for tailscale:apiKey) counts as unset.
  const read = (key: string, envName: string) => all[`tailscale:${key}`]?.trim() || env[envName]?.trim() || undefined;
  const apiKey = read("apiKey", "TAILSCALE_API_KEY");
  const oauthClientId = read("oauthClientId", "TAILSCALE_OAUTH_CLIENT_ID");
  const oauthClientSecret = read("oauthClientSecret", "TAILSCALE_OAUTH_CLIENT_SECRET");
  const tailnet = read("tailnet", "TAILSCALE_TAILNET") ?? DEFAULT_TAILNET;
  const chosen = chooseTailnetAuth({ apiKey, oauthClientId, oauthClientSecret });
  if (chosen && "missing" in chosen) {
    throw new Error(
      `Half a Tailscale OAuth client: tailscale:${chosen.missing} (or its TAILSCALE_* variable) is not set. Set both, or tailscale:apiKey.`,
    );
  }
  return chosen && { ...chosen, tailnet };
}
