import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";

// The weeks-long box's scripts, run for real: the watcher (watch.sh), the hooks' records (notify.sh hook), the status
// rows and the login banner. Each test runs in a private mount namespace whose /etc, /home, /var/lib, /run and
// /usr/local are throwaway overlays: a real agent user (made there), the scripts where the box has them, and
// stand-ins in /usr/local/bin for what must not touch this machine (systemctl, journalctl, apt-get, curl) and for
// what a test sets (df: the disk's use, date +%s: the clock). Nothing on this machine changes.
const FILES = join(__dirname, "..", "cloud-init", "files");
const AGENT = "agentboxtest";
const HOME = `/home/${AGENT}`;
// Sunday 2026-11-29 04:00 UTC
const SUNDAY_4AM = 1795924800;

const FAKES: Record<string, string> = {
  systemctl: `echo "systemctl $*" >>"$T/calls"
    case "$*" in *is-active\\ agentbox-workflow.service) cat "$T/workflow-unit" 2>/dev/null || echo inactive ;; esac`,
  journalctl: `echo "journalctl $*" >>"$T/calls"`,
  "apt-get": `echo "apt-get $*" >>"$T/calls"`,
  curl: `cat >>"$T/sent"`,
  // 91% used while the test's big debug log is there, else 12%; FREE MB free
  df: `if [ -e ${HOME}/.claude/debug/big.log ]; then p=91 f=90; else p=12 f=900; fi
    echo "Filesystem 1M-blocks Used Available Capacity Mounted on"; echo "/dev/x 1000M 910M \${f}M \${p}% \${!#}"`,
  date: `if [ "$*" = +%s ] && [ -s "$T/now" ]; then cat "$T/now"; else exec /bin/date "$@"; fi`,
};

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  /** A file of the test's box after the run (from its overlays), relative to /. */
  file: (path: string) => string;
  /** The commands the stand-ins were asked to run (systemctl, journalctl, apt-get), one a line. */
  calls: string;
  /** The bodies curl was given: the notifications that went out. */
  sent: string;
}

const readOr = (path: string) => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
};

/** Runs `script` (bash, as root) on a box whose /etc/agentbox/box.env has `env` besides the agent's settings. */
function onBox(script: string, env = "", now = SUNDAY_4AM): Run {
  const t = mkdtempSync(join(tmpdir(), "agentbox-box-"));
  // the stand-ins also run as the agent
  chmodSync(t, 0o755);
  for (const f of ["calls", "sent"]) {
    writeFileSync(join(t, f), "");
    chmodSync(join(t, f), 0o666);
  }
  writeFileSync(join(t, "now"), `${now}\n`);
  writeFileSync(join(t, "box.env"), env);
  mkdirSync(join(t, "bin"));
  for (const [name, body] of Object.entries(FAKES)) {
    writeFileSync(join(t, "bin", name), `#!/bin/bash\nT=${t}\n${body}\n`);
    chmodSync(join(t, "bin", name), 0o755);
  }
  const setup = `set -e
T=${t}
for d in etc home var/lib run usr/local; do
  mkdir -p "$T/o/$d" "$T/w/$d"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/o/$d,workdir=$T/w/$d" "/$d"
done
rm -f /run/reboot-required /run/reboot-required.pkgs
useradd -m -s /bin/bash ${AGENT}
mkdir -p /usr/local/lib/agentbox /usr/local/bin /etc/agentbox /var/lib/agentbox/workflow
install -d -o ${AGENT} -m 0755 /var/lib/agentbox/agent
chown ${AGENT} /var/lib/agentbox/workflow
cp ${FILES}/lib.sh /usr/local/lib/agentbox/lib.sh
install -m 0755 ${FILES}/notify.sh /usr/local/lib/agentbox/notify
install -m 0755 ${FILES}/watch.sh /usr/local/lib/agentbox/watch
install -m 0755 ${FILES}/agentbox-status.sh /usr/local/bin/agentbox-status
cp "$T"/bin/* /usr/local/bin/
export PATH=/usr/local/bin:$PATH
printf '%s\\n' AGENT_USER=${AGENT} AGENT_HOME=${HOME} WORKSPACE=${HOME}/workspace BOX_PROJECT=p BOX_STACK=s \\
  DISK_WARN_PCT=80 WORKFLOW_KEEP_RUNS=3 >/etc/agentbox/box.env
cat "$T/box.env" >>/etc/agentbox/box.env
echo result=ready >/var/lib/agentbox/status
as_agent() { runuser -u ${AGENT} -- env HOME=${HOME} "$@"; }
hook() { printf '%s' "{\\"session_id\\":\\"\${2:-s1}\\",\\"hook_event_name\\":\\"$1\\"\${3:+,$3}}" | as_agent /usr/local/lib/agentbox/notify hook; }
watch_of() { sed -n "s/^$1=//p" /var/lib/agentbox/watch; }
set +e
`;
  const r = spawnSync("unshare", ["-m", "--propagation", "private", "bash", "-c", setup + script], {
    encoding: "utf8",
  });
  return {
    status: r.status,
    stdout: r.stdout,
    stderr: r.stderr,
    file: (path: string) => readOr(join(t, "o", path)),
    calls: readOr(join(t, "calls")),
    sent: readOr(join(t, "sent")),
  };
}

/** The watcher's file after one run, as KEY -> VALUE. */
const watchFile = (r: Run) =>
  Object.fromEntries(
    r
      .file("var/lib/agentbox/watch")
      .split("\n")
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );

const EVERY_DAY = "MAINTENANCE_DAYS=1,2,3,4,5,6,7\nMAINTENANCE_START_MIN=0\nMAINTENANCE_END_MIN=1440\n";
const SUNDAY_3_TO_5 = "MAINTENANCE_DAYS=7\nMAINTENANCE_START_MIN=180\nMAINTENANCE_END_MIN=300\n";
const FLAG = "touch /run/reboot-required && echo linux-image-6.12.9 >/run/reboot-required.pkgs\n";

describe("the watcher: a reboot for updates, when and only when the box may", () => {
  test.each([
    ["no window", "", SUNDAY_4AM, "", "no maintenance window set (agentbox:maintenanceWindow)"],
    ["inside the window, between turns", SUNDAY_3_TO_5, SUNDAY_4AM, "", "reboot"],
    [
      "at the window's end (exclusive)",
      SUNDAY_3_TO_5,
      SUNDAY_4AM + 3600,
      "",
      "outside the maintenance window (Sun 03:00-05:00 UTC)",
    ],
    ["the day before", SUNDAY_3_TO_5, SUNDAY_4AM - 86400, "", "outside the maintenance window (Sun 03:00-05:00 UTC)"],
    ["every day, a minute before midnight", EVERY_DAY, SUNDAY_4AM + 20 * 3600 - 60, "", "reboot"],
    ["the agent mid-turn", EVERY_DAY, SUNDAY_4AM, "hook UserPromptSubmit", "the agent is mid-turn"],
    [
      "a turn started 13 h ago (stale)",
      EVERY_DAY,
      SUNDAY_4AM,
      `echo ${SUNDAY_4AM - 13 * 3600} >$T/now; hook UserPromptSubmit; echo ${SUNDAY_4AM} >$T/now`,
      "reboot",
    ],
    ["the turn ended", EVERY_DAY, SUNDAY_4AM, "hook UserPromptSubmit; hook Stop", "reboot"],
    [
      "another conversation's Stop",
      EVERY_DAY,
      SUNDAY_4AM,
      "hook UserPromptSubmit s1; hook Stop s2",
      "the agent is mid-turn",
    ],
    [
      "the agent's unit stopped mid-turn",
      EVERY_DAY,
      SUNDAY_4AM,
      "hook UserPromptSubmit; as_agent /usr/local/lib/agentbox/notify agent-exit",
      "reboot",
    ],
    [
      "a workflow running",
      EVERY_DAY,
      SUNDAY_4AM,
      "printf 'state=running\\nrun=20261129T030000Z\\n' | as_agent tee /var/lib/agentbox/workflow/state; echo active >$T/workflow-unit",
      "a workflow is running",
    ],
    [
      "a running state its unit left",
      EVERY_DAY,
      SUNDAY_4AM,
      "printf 'state=running\\nrun=20261129T030000Z\\n' | as_agent tee /var/lib/agentbox/workflow/state",
      "reboot",
    ],
    [
      "provisioning",
      EVERY_DAY,
      SUNDAY_4AM,
      "echo result=provisioning >/var/lib/agentbox/status",
      "provisioning has not finished",
    ],
    [
      "rebooted for updates 10 min ago",
      EVERY_DAY,
      SUNDAY_4AM,
      `echo last_reboot=${SUNDAY_4AM - 600} >/var/lib/agentbox/watch`,
      "the box rebooted for updates less than an hour ago",
    ],
    // the agent's turn file as a link to a root-only file that says busy: read with the agent's rights, it says nothing
    [
      "a link to a root-only busy turn",
      EVERY_DAY,
      SUNDAY_4AM,
      `printf 'state=busy\\nsince=${SUNDAY_4AM}\\n' >/etc/agentbox/busy && chmod 600 /etc/agentbox/busy && as_agent ln -s /etc/agentbox/busy /var/lib/agentbox/agent/turn`,
      "reboot",
    ],
  ])("%s", (_, window, now, before, want) => {
    const r = onBox(`{ :; ${before}\n} >/dev/null\n${FLAG}/usr/local/lib/agentbox/watch`, window, now);
    expect(r.status).toBe(0);
    const w = watchFile(r);
    expect(w.reboot_required).toBe("1");
    expect(w.reboot_pkgs).toBe("linux-image-6.12.9");
    if (want === "reboot") {
      expect(w.reboot).toBe("rebooting");
      expect(w.last_reboot).toBe(String(now));
      expect(r.calls).toContain("systemctl reboot\n");
    } else {
      expect(w.reboot).toBe("deferred");
      expect(w.reboot_reason).toBe(want);
      expect(r.calls).not.toContain("systemctl reboot");
    }
  });

  test("no flag: no reboot required; the last reboot for updates is kept", () => {
    const r = onBox(`echo last_reboot=1796000000 >/var/lib/agentbox/watch\n/usr/local/lib/agentbox/watch`, EVERY_DAY);
    expect(watchFile(r)).toMatchObject({
      reboot_required: "0",
      last_reboot: "1796000000",
      window: "Mon,Tue,Wed,Thu,Fri,Sat,Sun 00:00-24:00 UTC",
    });
  });
});

describe("the hooks' records (notify hook, as the agent)", () => {
  test("a turn: busy from UserPromptSubmit to Stop; no notification without the stack's settings", () => {
    const r = onBox(`hook UserPromptSubmit s1 '"prompt":"hi"'; cat /var/lib/agentbox/agent/turn; echo ---
      hook Stop s1; cat /var/lib/agentbox/agent/turn; stat -c '%U %a' /var/lib/agentbox/agent/turn`);
    expect(r.stdout).toBe(
      `state=busy\nsince=${SUNDAY_4AM}\nsession=s1\n---\nstate=idle\nsince=${SUNDAY_4AM}\nsession=s1\n${AGENT} 644\n`,
    );
    expect(r.sent).toBe("");
  });

  test.each([
    ["authentication_failed", '"error_type":"authentication_failed","error":"401"'],
    ["oauth_org_not_allowed", '"error_type":"oauth_org_not_allowed"'],
    ["billing_error", '"error":"billing_error"'],
  ])("StopFailure (%s): the login failed, with the fix for the box's credential; a later Stop: ok", (error, fields) => {
    const r = onBox(`install -d -o ${AGENT} -m 0700 ${HOME}/.config/agentbox
      printf 'CLAUDE_CODE_OAUTH_TOKEN=x\\n' | as_agent tee ${HOME}/.config/agentbox/agent.env >/dev/null
      printf 'NTFY_URL=http://127.0.0.1:9/t\\n' | as_agent tee ${HOME}/.config/agentbox/notify.env >/dev/null
      hook StopFailure s1 '${fields}'; cat /var/lib/agentbox/agent/auth; echo ---
      hook Stop s1; cat /var/lib/agentbox/agent/auth`);
    expect(r.stdout).toBe(
      `state=failed\nerror=${error}\nsince=${SUNDAY_4AM}\ncredential=oauth_token\n---\nstate=ok\nsince=${SUNDAY_4AM}\ncredential=oauth_token\n`,
    );
    expect(r.sent).toBe(
      `[p/s] cannot log in to Claude (${error}): a new token: claude setup-token on your laptop, then pulumi config set --secret agentbox:claudeOauthToken and npm run up (or attach and /login)\n` +
        "[p/s] finished a turn and waits for you\n",
    );
  });

  test("a rate limit is no login failure", () => {
    const r = onBox(
      `hook StopFailure s1 '"error_type":"rate_limit","error":"429"'; cat /var/lib/agentbox/agent/auth 2>&1`,
    );
    expect(r.stdout).toContain("No such file");
  });

  test("without jq the hooks still record (plain string values)", () => {
    const r =
      onBox(`mkdir -p /tmp/nojq && for c in bash sed head grep mktemp chmod mv rm date tr cut printf cat id env runuser tail; do ln -sf "$(command -v $c)" /tmp/nojq/; done
      printf '{"session_id": "s9", "hook_event_name": "UserPromptSubmit"}' | runuser -u ${AGENT} -- env PATH=/usr/local/bin:/tmp/nojq HOME=${HOME} /usr/local/lib/agentbox/notify hook
      cat /var/lib/agentbox/agent/turn`);
    expect(r.stdout).toBe(`state=busy\nsince=${SUNDAY_4AM}\nsession=s9\n`);
  });
});

// a home with what the watcher may free and what it must keep
const HOME_FILES = `as_agent sh -c 'cd && mkdir -p .claude/debug .claude/projects/-w .cache/pip .npm/_cacache/x workspace agentbox-runs &&
  for r in 20261101T000000Z 20261102T000000Z 20261103T000000Z 20261104T000000Z 20261105T000000Z; do mkdir agentbox-runs/$r; done &&
  echo conversation >.claude/projects/-w/s.jsonl && echo {} >.claude.json && echo work >workspace/f && echo c >.cache/pip/c &&
  echo old >.claude/debug/old.txt && touch -d "10 days ago" .claude/debug/old.txt && echo new >.claude/debug/new.txt &&
  ln -s /etc/agentbox/box.env .claude/debug/link && ln -s /etc agentbox-runs/20000101T000000Z'
  printf 'NTFY_URL=http://127.0.0.1:9/t\\n' >/etc/agentbox/notify.env
`;
const left = `cd ${HOME} && find . -path ./.bash\\* -prune -o -path ./.profile -prune -o -print | sort | paste -sd ' ' -; ls -ld /etc | cut -c 1`;

describe("the watcher: disk", () => {
  test("always: debug logs older than a week and workflow runs beyond the kept 3 (a running one kept too)", () => {
    const r = onBox(`${HOME_FILES}
      printf 'state=running\\nrun=20261101T000000Z\\n' | as_agent tee /var/lib/agentbox/workflow/state >/dev/null
      echo active >$T/workflow-unit
      /usr/local/lib/agentbox/watch >/dev/null; ${left}`);
    expect(r.stdout).toBe(
      ". ./.cache ./.cache/pip ./.cache/pip/c ./.claude ./.claude.json ./.claude/debug ./.claude/debug/link ./.claude/debug/new.txt " +
        "./.claude/projects ./.claude/projects/-w ./.claude/projects/-w/s.jsonl ./.npm ./.npm/_cacache ./.npm/_cacache/x " +
        "./agentbox-runs ./agentbox-runs/20261101T000000Z ./agentbox-runs/20261103T000000Z ./agentbox-runs/20261104T000000Z " +
        "./agentbox-runs/20261105T000000Z ./workspace ./workspace/f\nd\n",
    );
    expect(watchFile(r)).toMatchObject({ disk_pct: "12", disk_level: "ok", freed_mb: "" });
    expect(r.sent).toBe("");
  });

  test("at the warning level: debug logs and caches freed (as the agent), never followed; told once", () => {
    const r = onBox(`${HOME_FILES}
      as_agent sh -c 'echo big >~/.claude/debug/big.log'
      /usr/local/lib/agentbox/watch; ${left}; cat /etc/agentbox/box.env | head -n 1
      /usr/local/lib/agentbox/watch >/dev/null`);
    expect(r.stdout).toBe(
      "disk: the root disk 12% used (warning at 80%), 810 MB freed\nupdates: no reboot required\n" +
        ". ./.cache ./.claude ./.claude.json ./.claude/debug ./.claude/projects ./.claude/projects/-w ./.claude/projects/-w/s.jsonl " +
        "./.npm ./.npm/_cacache ./agentbox-runs ./agentbox-runs/20261103T000000Z ./agentbox-runs/20261104T000000Z " +
        `./agentbox-runs/20261105T000000Z ./workspace ./workspace/f\nd\nAGENT_USER=${AGENT}\n`,
    );
    expect(r.calls).toBe("journalctl --vacuum-size=1G\napt-get clean -q\n");
    expect(watchFile(r)).toMatchObject({ freed_mb: "810", freed_at: String(SUNDAY_4AM), disk_level: "ok" });
    expect(r.sent).toBe(
      "[p/s] disk: freed 810 MB (Claude Code's debug logs, caches, old workflow runs, the journal): the root disk 12% used now\n",
    );
  });

  test("still full after freeing: a warning once, then back below once", () => {
    // the big log belongs to root here: the agent cannot remove it, so the disk stays full
    const r = onBox(`${HOME_FILES}
      echo big >${HOME}/.claude/debug/big.log && chattr +i ${HOME}/.claude/debug/big.log 2>/dev/null || chmod 0555 ${HOME}/.claude/debug
      /usr/local/lib/agentbox/watch >/dev/null; /usr/local/lib/agentbox/watch >/dev/null; sed -n 's/^disk_\\(level\\|full\\)=//p' /var/lib/agentbox/watch
      chattr -i ${HOME}/.claude/debug/big.log 2>/dev/null; rm -f ${HOME}/.claude/debug/big.log
      /usr/local/lib/agentbox/watch >/dev/null`);
    expect(r.stdout).toBe("warning\nroot\n");
    expect(r.sent).toBe(
      "[p/s] disk: the root disk is at or above 80% (the root disk 91% used) after freeing 0 MB: make room (see agentbox-status)\n" +
        "[p/s] disk: back below 80%: the root disk 12% used\n",
    );
  });
});

describe("what the user sees: agentbox-status and the login banner", () => {
  const WATCH = [
    "checked=1795924800",
    "disk_pct=34",
    "disk_home_pct=91",
    "disk_warn_pct=80",
    "disk_level=warning",
    "disk_full=home",
    "freed_mb=120",
    "freed_at=1795921200",
    "window=Sun 03:00-05:00 UTC",
    "reboot_required=1",
    "reboot_required_since=1795917600",
    "reboot_pkgs=linux-image-6.12.9,libc6",
    "reboot=deferred",
    "reboot_reason=the agent is mid-turn",
    "last_reboot=1795300000",
    "auth=failed",
    "auth_error=authentication_failed",
    "auth_since=1795910400",
    "auth_credential=oauth_token",
  ].join("\n");

  test("agentbox-status: disk, updates and auth rows", () => {
    const r = onBox(`printf '%s\\n' '${WATCH}' >/var/lib/agentbox/watch
      printf 'state=failed\\nerror=authentication_failed\\nsince=1795910400\\ncredential=oauth_token\\n' | as_agent tee /var/lib/agentbox/agent/auth >/dev/null
      agentbox-status 2>/dev/null | grep -E '^(disk|updates|auth):'`);
    expect(r.stdout).toBe(
      [
        "disk:       WARNING: / 34%, home volume 91% used (frees space at 80%), still at or above it on home after freeing: make room; last freed 120 MB at 2026-11-29 03:00 UTC  [checked 2026-11-29 04:00 UTC]",
        "updates:    reboot required since 2026-11-29 02:00 UTC (linux-image-6.12.9,libc6): deferred, the agent is mid-turn; maintenance window Sun 03:00-05:00 UTC; last rebooted for updates 2026-11-21 22:26 UTC",
        "auth:       FAILED: authentication_failed since 2026-11-29 00:00 UTC: a new token: claude setup-token on your laptop, then pulumi config set --secret agentbox:claudeOauthToken and npm run up (or attach and /login)",
        "",
      ].join("\n"),
    );
  });

  test("the banner: the one line, then one warning each", () => {
    const r = onBox(`printf '%s\\n' '${WATCH}' >/var/lib/agentbox/watch
      mkdir -p /run/agentbox && echo since=1795921200 >/run/agentbox/volume-wait
      PS1='$ ' sh -c '. ${FILES}/login-banner.sh'`);
    expect(r.stdout).toBe(
      [
        "agentbox: ready. Claude Code: tmux -L agentbox attach -t claude. Details: agentbox-status",
        "agentbox: WARNING: disk at or above 80% (home) after freeing what is safe: make room",
        "agentbox: WARNING: updates need a reboot (linux-image-6.12.9,libc6): deferred, the agent is mid-turn",
        "agentbox: WARNING: Claude Code cannot log in (authentication_failed): it needs a new credential, see agentbox-status",
        "agentbox: WARNING: the home volume is missing (waited since 2026-11-29 03:00 UTC): the agent starts once it is attached",
        "",
      ].join("\n"),
    );
  });

  test("the banner prints nothing it cannot vouch for", () => {
    const r =
      onBox(`printf '%s\\n' reboot_required=1 'reboot_pkgs=$(x)' 'reboot_reason=\u001b]0;x' disk_level=ok >/var/lib/agentbox/watch
      PS1='$ ' sh -c '. ${FILES}/login-banner.sh'`);
    expect(r.stdout).toBe(
      "agentbox: ready. Claude Code: tmux -L agentbox attach -t claude. Details: agentbox-status\n" +
        "agentbox: WARNING: updates need a reboot (): deferred, \n",
    );
  });
});
