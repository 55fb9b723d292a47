#!/usr/bin/env bash
# Install (if needed) and start a real single-node Slurm cluster with 4 fake GPUs, for CI.
#
#   eval "$(bash .ci/slurm-up.sh [STATE_DIR])"      # exports SLURM_CONF
#   bash .ci/slurm-down.sh [STATE_DIR]              # stops what this started
#
# Idempotent: with everything up it only checks (~0.1 s). If slurmctld or slurmd is down, it
# starts it (slurmd is always restarted with slurmctld); slurmctld recovers its saved jobs when only
# it had died, and starts with an empty queue (-c) on a cold start or after a config change.
# Must run as root (apt, mknod, SlurmUser=root). Works without systemd: every daemon is started by
# hand, with its pid file, log and spool in the state dir. Only `export ...` lines go to stdout,
# everything else to stderr. NB: `eval "$(slurm-up.sh)"` does not fail under `set -e` when the
# script fails (eval of an empty string succeeds); use `x="$(bash .ci/slurm-up.sh)"; eval "$x"`.
set -euo pipefail
exec 3>&1 1>&2   # fd 3 = the caller's stdout (exports only); stdout -> stderr from here on
# Daemons are started with fd 3 closed and their stdio on files: one that kept the caller's
# stdout would make `eval "$(slurm-up.sh)"` wait forever (munged does keep inherited fds).

STATE="${1:-${SPECTRAVENV_SLURM_STATE:-/tmp/spectravenv-slurm}}"
CPUS="${SPECTRAVENV_SLURM_CPUS:-16}"   # advertised, more than exist (SlurmdParameters=config_overrides)
NGPUS=4
CTLD_PORT="${SPECTRAVENV_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${SPECTRAVENV_SLURMD_PORT:-6818}"
WAIT_S="${SPECTRAVENV_SLURM_WAIT_S:-60}"
# Slurm's default; clients retry a dead slurmctld for about MessageTimeout-1 s (9 s) per call
MSG_TIMEOUT="${SPECTRAVENV_SLURM_MSG_TIMEOUT:-10}"
PACKAGES=(munge slurmctld slurmd slurm-client)

log() { printf 'slurm-up: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, mknod, runs SlurmUser=root)"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd -P)"
CONF="$STATE/slurm.conf"
NODE="$(hostname -s)"
[ -n "$NODE" ] || die "hostname -s is empty"

# --- 1. packages -------------------------------------------------------------------------------
installed() {
  local p
  for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || return 1
  done
  command -v munged >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null
}
if installed; then
  log "packages already installed: ${PACKAGES[*]}"
else
  log "installing ${PACKAGES[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' own service scripts from starting daemons during the install (a Docker
  # image usually has this file already; only add it, and remove it, if it was not there).
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
    >"$STATE/apt.log" 2>&1 || rc=$?
  [ -z "$added_policy" ] || rm -f /usr/sbin/policy-rc.d
  if [ "$rc" != 0 ]; then tail -n 40 "$STATE/apt.log" >&2; die "apt-get failed (exit $rc)"; fi
  installed || die "packages still missing after apt-get install"
  log "installed in $(elapsed) s"
fi

# --- helpers -------------------------------------------------------------------------------------
running() {   # running PID: the process exists and is not a zombie
  [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
# pid_alive PIDFILE NAME: the pid in PIDFILE is running and its command name is NAME.
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid="$(tr -dc 0-9 <"$1")"
  [ -n "$pid" ] && running "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
stop_pid() {   # stop_pid PIDFILE NAME: TERM, up to 5 s, then KILL
  local pid
  pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
  pid="$(tr -dc 0-9 <"$1")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  rm -f "$1"
}

# --- 2. munge (own socket, key, pid file and log inside the state dir) ---------------------------
MUNGE_DIR="$STATE/munge"
MUNGE_SOCK="$MUNGE_DIR/munge.socket"
MUNGE_PID="$MUNGE_DIR/munged.pid"
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key --force
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge
chmod 400 /etc/munge/munge.key
# munged refuses group/other-writable directories on the path of its socket, log and pid files.
install -d -o munge -g munge -m 755 "$MUNGE_DIR"
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
if pid_alive "$MUNGE_PID" munged; then
  log "munged already running (pid $(cat "$MUNGE_PID"))"
else
  log "starting munged"
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCK" --pid-file="$MUNGE_PID" \
    --log-file="$MUNGE_DIR/munged.log" --seed-file=/var/lib/munge/munged.seed --key-file=/etc/munge/munge.key \
    </dev/null >"$MUNGE_DIR/munged.start.log" 2>&1 3>&- \
    || { cat "$MUNGE_DIR/munged.start.log" "$MUNGE_DIR/munged.log" >&2 2>/dev/null || true
         die "munged failed to start"; }
fi
for _ in $(seq 50); do
  munge -n --socket="$MUNGE_SOCK" 2>/dev/null | unmunge --socket="$MUNGE_SOCK" >/dev/null 2>&1 && break
  sleep 0.1
done
munge -n --socket="$MUNGE_SOCK" | unmunge --socket="$MUNGE_SOCK" >/dev/null \
  || { cat "$MUNGE_DIR/munged.log" >&2 2>/dev/null || true; die "munge round trip failed"; }

# --- 3. fake GPUs and configuration -----------------------------------------------------------
mkdir -p "$STATE/dev" "$STATE/spool/ctld" "$STATE/spool/slurmd" "$STATE/log" "$STATE/run"
for i in $(seq 0 $((NGPUS - 1))); do
  dev="$STATE/dev/nvidia$i"
  [ -c "$dev" ] || { rm -f "$dev"; mknod "$dev" c 1 3; }   # /dev/null's numbers; Slurm needs a char device
done

mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 }' /proc/meminfo)
real_mb=$((mem_mb * 9 / 10))                 # leave the OS some room
def_mem=$((real_mb / CPUS))                  # without it every job would take the whole node's memory

new_conf="$(cat <<EOF
# Generated by .ci/slurm-up.sh -- single-node CI cluster with $NGPUS fake GPUs.
ClusterName=spectravenv-ci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=300
KillWait=2
InactiveLimit=0
Waittime=0
MessageTimeout=$MSG_TIMEOUT
PropagateResourceLimits=NONE
GresTypes=gpu
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$real_mb Gres=gpu:$NGPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)"
new_gres="$(cat <<EOF
# Generated by .ci/slurm-up.sh: fake GPUs (character devices, not real ones).
AutoDetect=off
Name=gpu File=$STATE/dev/nvidia[0-$((NGPUS - 1))]
EOF
)"

CTLD_PID="$STATE/run/slurmctld.pid"
SLURMD_PID="$STATE/run/slurmd.pid"
if [ "$new_conf" != "$(cat "$CONF" 2>/dev/null)" ] || [ "$new_gres" != "$(cat "$STATE/gres.conf" 2>/dev/null)" ]; then
  if pid_alive "$CTLD_PID" slurmctld || pid_alive "$SLURMD_PID" slurmd; then
    log "configuration changed: restarting slurm daemons"
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
  fi
  printf '%s\n' "$new_conf" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
  printf '%s\n' "$new_gres" >"$STATE/gres.conf.tmp" && mv "$STATE/gres.conf.tmp" "$STATE/gres.conf"
  log "wrote $CONF and $STATE/gres.conf"
fi

# --- 4. daemons ----------------------------------------------------------------------------------
export SLURM_CONF="$CONF"   # daemons, their slurmstepds and the clients below all read it
# slurmd is (re)started whenever slurmctld is, so that the readiness check below can insist on a
# registration newer than this run (a restarted slurmctld restores the node as IDLE from its saved
# state before any slurmd has talked to it). Restarting slurmd leaves running jobs alone.
slurmd_since=""
if pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd; then
  log "slurmctld and slurmd already running (pids $(cat "$CTLD_PID") $(cat "$SLURMD_PID"))"
else
  slurmd_was_running=""
  if pid_alive "$SLURMD_PID" slurmd; then slurmd_was_running=1; fi
  stop_pid "$SLURMD_PID" slurmd
  if ! pid_alive "$CTLD_PID" slurmctld; then
    # Cold start (slurmd was not running either, e.g. after slurm-down): begin with an empty
    # queue (-c drops saved jobs and node states). slurmctld alone died: recover its jobs.
    clear=()
    if [ -z "$slurmd_was_running" ]; then clear=(-c); fi
    log "starting slurmctld${clear:+ (clean state: ${clear[*]})}"
    slurmctld "${clear[@]}" -f "$CONF" </dev/null >"$STATE/log/slurmctld.start.log" 2>&1 3>&- \
      || { cat "$STATE/log/slurmctld.start.log" >&2; die "slurmctld failed to start; see $STATE/log/slurmctld.log"; }
  fi
  log "starting slurmd"
  slurmd_since="$(date +%Y-%m-%dT%H:%M:%S)"   # scontrol prints local time, whole seconds
  slurmd -f "$CONF" </dev/null >"$STATE/log/slurmd.start.log" 2>&1 3>&- \
    || { cat "$STATE/log/slurmd.start.log" >&2; die "slurmd failed to start; see $STATE/log/slurmd.log"; }
fi

# --- 5. wait until the node is idle ------------------------------------------------------------
deadline=$(( $(date +%s) + WAIT_S ))
state=""
resumed=""
while :; do
  state="$(timeout 10 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n 1 || true)"
  case "$state" in   # a trailing '*' (idle*) means not responding: not ready
    idle|mix|alloc)
      [ -z "$slurmd_since" ] && break
      registered="$(timeout 10 scontrol show node "$NODE" 2>/dev/null \
        | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p' || true)"
      [[ "$registered" != None && ! "$registered" < "$slurmd_since" ]] && break ;;
    down*|drain*|drng*|fail*)
      # a node left DOWN/DRAINED by an earlier run's saved state: bring it back once
      if [ -z "$resumed" ]; then
        timeout 10 scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "node $NODE not idle after ${WAIT_S}s (state: '${state:-no answer}')"
    for f in "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" "$MUNGE_DIR/munged.log"; do
      printf '\n===== %s (last 60 lines) =====\n' "$f" >&2
      tail -n 60 "$f" >&2 2>/dev/null || true
    done
    timeout 10 scontrol show node "$NODE" >&2 2>&1 || true
    exit 1
  fi
  sleep 0.2
done
log "node $NODE is $state ($CPUS CPUs, gpu:$NGPUS) after $(elapsed) s; state dir $STATE"

printf 'export SLURM_CONF=%q\n' "$CONF" >&3
