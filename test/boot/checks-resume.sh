# shellcheck shell=bash
# Faults of a box's boots, forced on the running box and checked there:
#  - a first boot cut short: the box is killed outright (its systemd-nspawn, as in a crash or a power loss) in the
#    middle of provisioning, having lost a package cloud-init installed, and booted again on the same disk;
#    agentbox-resume.service finishes the provisioning (the digitalocean CI stack, INTERRUPT_FIRST_BOOT)
#  - a busy first boot: the package lock held while the resumed provisioning installs unattended-upgrades; Tailscale's
#    install retried with backoff (its servers are out of reach here, on every stack)
#  - a volume attached late: the reboot of a stack with a volume boots without it, attached a while later
# Sourced by box.sh after checks-life.sh.

# auto: the digitalocean CI stack's first boot is cut short (the hetzner one's reboot has the late volume)
INTERRUPT_FIRST_BOOT=${INTERRUPT_FIRST_BOOT:-auto}
PROVISION_LOG=/var/log/agentbox/provision.log
# where the volume's device is in the box until the test "attaches" it at the path the cloud's udev links it to
LATE_VOLUME_PATH=/dev/agentbox-test-volume
APT_LOCK_RELEASE=/run/agentbox-test-apt-lock-release
T_KILL=       # when the first boot was killed
APT_LOCK_PID= # the background job that holds the package lock (box.sh's finish_test need not wait for it)

wants_interrupted_first_boot() {
  case $INTERRUPT_FIRST_BOOT in
    1) return 0 ;;
    auto) ud_has '^ *BOX_STACK=ci-digitalocean$' ;;
    *) return 1 ;;
  esac
}
provisioning_under_way() { [ "$(status_get firewall)" = ok ] && [ "$(status_get result)" = provisioning ]; }
provisioning_ended() { case $(status_get result) in ready | degraded | failed) return 0 ;; *) return 1 ;; esac; }

# --- a first boot cut short -------------------------------------------------------------------------------

# Right after start_box: once provisioning is under way (the firewall step done, the result still "provisioning"),
# a package cloud-init installed is taken away and the box is killed; then the same disk boots again (cloud-init
# sees the same instance). Resets T_BOOT to the second boot.
interrupt_first_boot() {
  wants_interrupted_first_boot || return 0
  local deadline=$(($(date +%s) + CLOUD_INIT_TIMEOUT))
  until provisioning_under_way 2>/dev/null; do
    if ! box_running "$RUN_DIR" || [ "$(date +%s)" -ge "$deadline" ]; then
      not_ok "first boot cut short: provisioning was under way to be cut short" "$(cin cat "$STATUS_FILE" 2>&1)"
      return
    fi
    sleep 0.3
  done
  # as if cloud-init's package module had not got to it
  cin dpkg --remove mosh >/dev/null 2>&1 || log "could not remove mosh before the kill"
  log "status at the kill, $(since "$T_BOOT") s after boot: $(cin cat "$STATUS_FILE" | tr '\n' ' ')"
  T_KILL=$(now)
  box_kill "$RUN_DIR"
  if box_running "$RUN_DIR"; then
    not_ok "first boot cut short: the box is gone after kill -KILL of its systemd-nspawn"
    return
  fi
  ok "first boot cut short: killed (kill -KILL of its systemd-nspawn) while provisioning ran"
  T_BOOT=$(now)
  box_boot "$RUN_DIR" "$NAME" "$RUN_DIR/console-resumed.log"
  log "box $NAME booting again on the same disk (pid 1 = $LEADER)"
  if ud_has '^ *UNATTENDED_UPGRADES=1$'; then hold_apt_lock_during_resume; fi
}

# In the background: from the moment the resumed provisioning has the agent up, the package lock is held (POSIX
# locks on dpkg's lock files, as apt and dpkg take them; flock(1) would not conflict with apt's) until the log says
# that the updates step waits for it, and 30 s more. python3 is in every box (cloud-init needs it).
hold_apt_lock_during_resume() {
  (
    deadline=$(($(date +%s) + CLOUD_INIT_TIMEOUT))
    until [ "$(status_get agent 2>/dev/null)" = ok ]; do
      box_running "$RUN_DIR" && [ "$(date +%s)" -lt "$deadline" ] || exit 0
      sleep 0.5
    done
    # shellcheck disable=SC2016 # Python, run inside the box
    cin systemd-run --quiet --unit=agentbox-test-apt-lock python3 -c '
import fcntl, os, sys, time
locks = [open(p, "a") for p in sys.argv[2:]]
for f in locks: fcntl.lockf(f, fcntl.LOCK_EX)
end = time.time() + 600
while not os.path.exists(sys.argv[1]) and time.time() < end: time.sleep(0.2)' \
      "$APT_LOCK_RELEASE" /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock || exit 0
    echo "held $(now)" >"$RUN_DIR/apt-lock"
    # never for long without a waiter: Tailscale's retries come first (75 s here)
    deadline=$(($(date +%s) + 240))
    until cin grep -q '^agentbox: waiting for the package lock' "$PROVISION_LOG" 2>/dev/null; do
      if ! box_running "$RUN_DIR" || [ "$(date +%s)" -ge "$deadline" ] || provisioning_ended 2>/dev/null; then break; fi
      sleep 0.5
    done
    sleep 30
    cin touch "$APT_LOCK_RELEASE"
    echo "released $(now)" >>"$RUN_DIR/apt-lock"
  ) &
  APT_LOCK_PID=$!
}

first_run_starts() { cin grep -c '^agentbox: firewall \.\.\.$' "$PROVISION_LOG"; }
provisioned_once_by_cloud_init() {
  local n
  n=$(first_run_starts)
  echo "first-run starts in $PROVISION_LOG: $n; semaphore: $(cin ls -l --time-style=+%s /var/lib/cloud/instance/sem/config_scripts_user 2>&1)"
  [ "$n" = 1 ]
}
resumed_by_the_unit() {
  local j
  j=$(cin journalctl -b -u agentbox-resume.service --no-pager -o cat 2>&1)
  grep -q '^agentbox: resuming provisioning after an interrupted first boot' <<<"$j" || {
    tail -n 20 <<<"$j"
    return 1
  }
  [ "$(cin grep -c '^agentbox: resuming provisioning after an interrupted first boot' "$PROVISION_LOG")" = 1 ]
}
resume_recorded() {
  local status
  status=$(cin cat "$STATUS_FILE")
  echo "$status"
  grep -qx 'resumed=1' <<<"$status" && grep -qxE 'result=(ready|degraded)' <<<"$status"
}
package_reinstalled() {
  echo "packages=$(status_get packages); mosh: $(cin dpkg-query -W -f="\${Status}" mosh 2>&1)"
  [ "$(status_get packages)" = ok ] && cin dpkg -s mosh >/dev/null
}
kept_steps() { # the steps the first boot had finished: not run again
  local step out=0
  for step in "$@"; do
    cin grep -q "^agentbox: $step ok on an earlier boot$" "$PROVISION_LOG" || {
      echo "no 'agentbox: $step ok on an earlier boot' in the log"
      out=1
    }
  done
  return $out
}

# After cloud-init's end on the second boot: the resume runs after it, and ends provisioning.
check_resumed() {
  wants_interrupted_first_boot && [ -n "$T_KILL" ] || return 0
  local active
  if eventually "$CLOUD_INIT_TIMEOUT" provisioning_ended >/dev/null; then
    ok "resumed: provisioning ended ($(status_get result)) on the boot after the kill"
  else
    not_ok "resumed: provisioning ended on the boot after the kill" "$(cin cat "$STATUS_FILE" 2>&1)"
  fi
  log "status after the resume: $(cin cat "$STATUS_FILE" | tr '\n' ' ')"
  check "resumed: cloud-init did not run provisioning again (its runcmd's semaphore, written before the kill)" \
    provisioned_once_by_cloud_init
  check "resumed: agentbox-resume.service finished it (after cloud-final.service)" resumed_by_the_unit
  check "resumed: the status records the resume (resumed=1) and ends ready or degraded" resume_recorded
  check "resumed: the step done before the kill was kept, not run again (firewall)" kept_steps firewall
  check "resumed: the package lost with the crash is installed again (packages=ok, mosh)" package_reinstalled
  if ud_has '^ *TAILSCALE=1$'; then
    check "resumed: the Tailscale auth key (in /run, gone with the reboot) is taken again from cloud-init's copy" \
      cin grep -q "^the auth key again from cloud-init's copy of the user-data$" "$PROVISION_LOG"
  fi
  check "resumed: the agent runs" eventually 60 ucl is-active "$UNIT"
  if active=$(unit_active_since); then
    log "resume: kill_to_agent_active_s=$(seconds_between "$T_KILL" "$active") (boot to agent active $(seconds_between "$T_BOOT" "$active") s)"
  fi
}

# --- a busy first boot ------------------------------------------------------------------------------------

# the last of the log's retry lines for COMMAND: "N DELAY" each
retries_of() {
  cin sed -n "s/^agentbox: $1 failed (attempt \([0-9]*\) of [0-9]*, exit [0-9]*); trying again in \([0-9]*\) s$/\1 \2/p" "$PROVISION_LOG"
}
tailscale_retried() {
  local r
  r=$(retries_of install_tailscale_once | tail -n 4 | paste -sd, -)
  echo "retries: $r; tailscale=$(status_get tailscale)"
  [ "$r" = "1 5,2 10,3 20,4 40" ] && [[ $(status_get tailscale) == "failed: could not reach Tailscale's package server (5 attempts)" ]]
}
apt_lock_waited() {
  local held waited
  held=$(cin grep '^agentbox: waiting for the package lock' "$PROVISION_LOG" | tail -n 1)
  waited=$(cin sed -n 's/^agentbox: waited \([0-9]*\) s for the package lock$/\1/p' "$PROVISION_LOG" | tail -n 1)
  echo "$held; waited ${waited:-?} s; updates=$(status_get updates)"
  [[ $held == *"python3 (pid "* ]] && [ "${waited:-0}" -ge 25 ] && [ "$(status_get updates)" = ok ]
}

# After the status checks: the retries and the lock, as the provisioning log tells them.
check_busy_first_boot() {
  local waited
  if ud_has '^ *TAILSCALE=1$'; then
    check "busy first boot: Tailscale's install tried 5 times with backoff (5, 10, 20, 40 s), then tailscale=failed" \
      tailscale_retried
  fi
  if wants_interrupted_first_boot && [ -n "$APT_LOCK_PID" ]; then
    wait "$APT_LOCK_PID" 2>/dev/null
    check "busy first boot: with the package lock held, the updates step waited for it and ended ok" apt_lock_waited
    waited=$(cin sed -n 's/^agentbox: waited \([0-9]*\) s for the package lock$/\1/p' "$PROVISION_LOG" | tail -n 1)
    log "apt lock: the updates step waited ${waited:-?} s for the package lock (held by the test from agent=ok)"
  fi
}

# --- a volume attached late -------------------------------------------------------------------------------

# Before the reboot's box_boot: the volume's device goes into the box at a neutral path, not where the cloud's udev
# links an attached volume.
hide_volume_for_reboot() {
  wants_volume || return 0
  box_volume "$RUN_DIR" "$LATE_VOLUME_PATH"
}

volume_wait_file_ok() {
  local f
  f=$(cin cat /run/agentbox/volume-wait 2>&1) || {
    echo "$f"
    return 1
  }
  echo "$f"
  grep -qxE 'since=[0-9]+' <<<"$f" && grep -qx "uuid=$(cin sed -n 's/^uuid=//p' /var/lib/agentbox/volume)" <<<"$f" &&
    grep -qx 'glob=/dev/disk/by-id/scsi-0HC_Volume_\*' <<<"$f"
}
volume_unit_waits() {
  local state
  state=$(cin systemctl show -p ActiveState -p SubState -p Result agentbox-volume.service | sort | paste -sd' ' -)
  echo "$state"
  [ "$state" = "ActiveState=activating Result=success SubState=start" ]
}
agent_waits() {
  local jobs
  jobs=$(cin systemctl list-jobs --no-legend --no-pager 2>&1)
  echo "user@$AUID.service: $(cin systemctl is-active "user@$AUID.service"); claude: $(cin pgrep -u "$AGENT" -x claude || echo none); jobs:"
  echo "$jobs"
  [ "$(cin systemctl is-active "user@$AUID.service")" != active ] && ! cin pgrep -u "$AGENT" -x claude >/dev/null &&
    grep -Eq "user@$AUID\.service +start +waiting" <<<"$jobs"
}
# what else a boot does is not held by the wait: sshd, cloud-init's final stage, the resume's no-op
boot_not_held() {
  local u bad=0
  for u in ssh.service cloud-final.service agentbox-resume.service; do
    echo "$u: $(cin systemctl show -p ActiveState -p Result --value "$u" | paste -sd' ' -)"
  done
  cin systemctl is-active --quiet ssh.service || bad=1
  [ "$(cin systemctl show -p ActiveState --value cloud-final.service)" = active ] || bad=1
  [ "$(cin systemctl show -p Result --value agentbox-resume.service)" = success ] &&
    [ "$(cin systemctl show -p ActiveState --value agentbox-resume.service)" = inactive ] || bad=1
  return $bad
}
admin_sees_wait() { box_ssh "$ADMIN" sudo -n cat /run/agentbox/volume-wait; }

# Right after the reboot's box_boot: the box waits for its volume and says so, the admin gets in, root's notification
# arrives; then the volume is attached (bound at its by-id path inside the box, where mount finds a device node as
# it does on the first boot; the cloud's udev makes a link there) and the agent comes up by itself. T_START: the boot.
check_late_volume() {
  wants_volume || return 0
  local t_boot=$1 t_attach t_notified active
  start_ntfy_receiver
  check "late volume: /run/agentbox/volume-wait says what the box waits for (since, uuid, glob)" eventually 30 volume_wait_file_ok
  check "late volume: agentbox-volume.service waits (activating, not failed)" volume_unit_waits
  check "late volume: the agent's user manager waits for it (its start job queued), no claude runs" agent_waits
  check "late volume: the rest of the boot is not held (sshd active, cloud-final done, the resume a no-op)" \
    eventually 60 boot_not_held
  if [ -n "$ADMIN" ] && ssh_from_harness; then
    check "late volume: $ADMIN logs in meanwhile and reads the wait" admin_sees_wait
  fi
  if wants_notify; then
    if eventually 180 received 'volume-missing: the volume [0-9a-f-]+ is not attached; the agent waits for it' >/dev/null; then
      t_notified=$(since "$t_boot")
      ok "late volume: root's notification about the missing volume arrived ($t_notified s after boot)"
    else
      not_ok "late volume: root's notification about the missing volume arrived" "$(cin cat "$NTFY_LOG" 2>&1)"
    fi
  fi
  check "late volume: still no agent after $(since "$t_boot") s without the volume" agent_waits
  t_attach=$(now)
  cin sh -c "mkdir -p '${VOLUME_DEVICE%/*}' && touch '$VOLUME_DEVICE' && mount --bind '$LATE_VOLUME_PATH' '$VOLUME_DEVICE'" ||
    log "could not attach the volume at $VOLUME_DEVICE"
  log "late volume: attached $(seconds_between "$t_boot" "$t_attach") s after boot"
  check "late volume: once attached, the agent starts by itself" eventually 90 ucl is-active "$UNIT"
  check "late volume: /home/$AGENT is the volume" home_is_volume
  check "late volume: /run/agentbox/volume-wait is gone" sh -c "! nsenter -t $LEADER -a test -e /run/agentbox/volume-wait"
  if active=$(unit_active_since); then
    log "late volume: boot_to_attach_s=$(seconds_between "$t_boot" "$t_attach") attach_to_agent_active_s=$(seconds_between "$t_attach" "$active") boot_to_agent_active_s=$(seconds_between "$t_boot" "$active")"
  fi
  # later boots of the run (the re-created box): the volume where the cloud's udev links it
  prepare_volume
}
