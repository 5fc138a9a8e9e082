#!/usr/bin/env bash
# Stop the single-node Slurm started by slurm/local/start.sh: cancel leftover jobs, then stop exactly the
# daemons whose PID files are in the state folder (DA_SLURM_STATE, default slurm/local/state).
# Safe to run again: a daemon that is not running (or a PID now used by another program) is skipped.
set -Eeuo pipefail
# No silent exits: under set -e any failing command ends the script, so name the line and the command.
# Only in the script's own shell: a subshell ($(...), <(...)) keeps its plain status, which the caller handles.
trap 'rc=$?; if [[ $BASHPID == "$$" ]]; then
    echo "[slurm-local] ERROR: ${BASH_SOURCE[0]}:$LINENO: \`$BASH_COMMAND\` exited with status $rc" >&2; exit $rc; fi' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${DA_SLURM_STATE:-$HERE/state}
say() { echo "[slurm-local] $*"; }
if [[ ! -d $STATE ]]; then say "no state folder $STATE; nothing to stop"; exit 0; fi
STATE=$(cd "$STATE" && pwd)
PIDS=$STATE/pid LOG=$STATE/log
export SLURM_CONF=$STATE/etc/slurm.conf

exe_of() { readlink -f "$(command -v "$1" || echo "/usr/sbin/$1")"; }
# pid_of NAME EXE: the PID in NAME's PID file if that process runs EXE (a stale file may name a reused PID)
pid_of() {
    local pidf=$PIDS/$1.pid pid
    [[ -s $pidf ]] || return 1
    pid=$(<"$pidf"); pid=${pid//[^0-9]/}
    [[ -n $pid && $(readlink "/proc/$pid/exe" 2>/dev/null) == "$2"* ]] || return 1
    echo "$pid"
}

# Jobs first, while slurmctld and slurmd can still deliver the signals and record the end in accounting.
if pid_of slurmctld "$(exe_of slurmctld)" >/dev/null && [[ -f $SLURM_CONF ]]; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
        say "cancelling leftover jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        # KillWait is 5 s; give the jobs that long plus a margin to leave
        for _ in $(seq 1 50); do
            [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.2
        done
        left=$(squeue -h -o '%A %T' 2>/dev/null | tr '\n' ';')
        [[ -z $left ]] || say "WARNING: jobs still listed after scancel: $left (see $LOG/slurmctld.log)"
    fi
fi

# stop NAME [PROGRAM]: SIGTERM, wait up to 20 s for a clean exit (MariaDB flushes, slurmctld saves state), then SIGKILL
stop() {
    local name=$1 exe pid
    exe=$(exe_of "${2:-$1}")
    if ! pid=$(pid_of "$name" "$exe"); then
        rm -f "$PIDS/$name.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        [[ -e /proc/$pid && $(readlink "/proc/$pid/exe" 2>/dev/null) == "$exe"* ]] || break
        sleep 0.2
    done
    if [[ -e /proc/$pid && $(readlink "/proc/$pid/exe" 2>/dev/null) == "$exe"* ]]; then
        say "WARNING: $name (PID $pid) ignored SIGTERM for 20 s; killing it (log: $LOG/$name.log)"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$name.pid"
    say "$name stopped (PID $pid)"
}
# reverse start order: nothing loses its server while it still needs it
stop slurmd
stop slurmctld
stop slurmdbd
stop mariadb mariadbd
stop munged

# job steps outlive slurmd by design; after the scancel above there should be none
steps=$(pgrep -x slurmstepd | tr '\n' ' ' || true)
[[ -z $steps ]] || say "WARNING: slurmstepd processes still running (PIDs $steps); see $LOG/slurmd.log"
exit 0
