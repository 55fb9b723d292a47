#!/usr/bin/env bash
# Stop the single-node CI Slurm cluster started by .ci/slurm-up.sh (same STATE_DIR argument).
# Cancels its jobs, then stops slurmd, slurmctld and munged by the pid files in the state dir, and
# any slurmstepd left behind by this cluster. Idempotent; always exits 0. Leaves the state dir
# (logs, configuration) in place for inspection.
# pid lists are deliberately word-split (an empty one means no arguments)
# shellcheck disable=SC2086,SC2046
set -uo pipefail

STATE="${1:-${SPECTRAVENV_SLURM_STATE:-/tmp/spectravenv-slurm}}"
t0=$(date +%s.%N)
log() { printf 'slurm-down: [%4.1fs] %s\n' "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$*" >&2; }
if [ ! -d "$STATE" ]; then log "no state dir $STATE: nothing to stop"; exit 0; fi
STATE="$(cd "$STATE" && pwd -P)" || exit 0
CONF="$STATE/slurm.conf"

running() {   # running PID: the process exists and is not a zombie
  [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
pid_of() {   # pid_of PIDFILE NAME: print the pid if it is alive and its command name is NAME
  local pid
  [ -s "$1" ] || return 1
  pid="$(tr -dc 0-9 <"$1")"
  [ -n "$pid" ] && running "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}
stop_pids() {   # stop_pids LABEL GRACE PID...: TERM, wait up to GRACE seconds, then KILL
  local label="$1" grace="$2" pid alive
  shift 2
  [ "$#" -gt 0 ] || return 0
  log "stopping $label (pid $*)"
  kill -TERM "$@" 2>/dev/null
  for _ in $(seq $((grace * 10))); do
    alive=""
    for pid in "$@"; do running "$pid" && alive=1; done
    [ -z "$alive" ] && return 0
    sleep 0.1
  done
  log "$label still running after $grace s: SIGKILL"
  kill -KILL "$@" 2>/dev/null
  sleep 0.2
}
# slurmstepd processes of this cluster: they inherit SLURM_CONF=<our conf> from our slurmd.
our_stepds() {
  local d pid
  for d in /proc/[0-9]*; do
    pid="${d#/proc/}"
    [ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
    tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qxF "SLURM_CONF=$CONF" && echo "$pid"
  done
}

ctld="$(pid_of "$STATE/run/slurmctld.pid" slurmctld)"
slurmd="$(pid_of "$STATE/run/slurmd.pid" slurmd)"
munged="$(pid_of "$STATE/munge/munged.pid" munged)"

# Cancel jobs while the daemons are up, so their processes are ended by Slurm itself.
if [ -n "$ctld" ] && [ -n "$slurmd" ] && [ -f "$CONF" ]; then
  export SLURM_CONF="$CONF"
  jobs="$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
  if [ -n "${jobs// /}" ]; then
    log "cancelling remaining jobs: $jobs"
    timeout 10 scancel --full $jobs >/dev/null 2>&1
    for _ in $(seq 50); do
      [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
fi

# descendants PID...: every process below the given ones (parents taken from /proc/*/stat)
descendants() {
  local d ppid stat frontier=" $* " found="" changed=1
  while [ -n "$changed" ]; do
    changed=""
    for d in /proc/[0-9]*; do
      stat="$(cat 2>/dev/null <"$d/stat")" || continue
      ppid="$(printf '%s' "${stat##*) }" | cut -d' ' -f2)"
      case "$frontier" in *" $ppid "*) ;; *) continue ;; esac
      case "$frontier" in *" ${d#/proc/} "*) continue ;; esac
      frontier="$frontier${d#/proc/} "; found="$found ${d#/proc/}"; changed=1
    done
  done
  echo "$found"
}

stop_pids slurmd 5 $slurmd
# Left-over job steps (slurmctld was already gone, or a job ignored the cancel): end the job's
# processes first; a slurmstepd ignores SIGTERM, and killing it alone would orphan them.
stepds="$(our_stepds | tr '\n' ' ')"
if [ -n "$stepds" ]; then
  stop_pids "job processes" 2 $(descendants $stepds)
  log "killing slurmstepd (pid $stepds)"
  kill -KILL $stepds 2>/dev/null
fi
stop_pids slurmctld 10 $ctld
stop_pids munged 5 $munged
rm -f "$STATE/run/slurmd.pid" "$STATE/run/slurmctld.pid" "$STATE/munge/munged.pid"
log "stopped (state dir $STATE kept)"
exit 0
