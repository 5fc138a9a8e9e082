#!/usr/bin/env bash
# Start a real single-node Slurm (Debian 12: Slurm 22.05 + MariaDB 10.11) with accounting, without systemd.
#
#   slurm/local/start.sh            # install if needed, configure, start, wait until the node is idle
#   source slurm/local/state/env.sh # then sbatch/sinfo/sacct and submitit talk to this cluster
#
# Everything lives under one state folder: DA_SLURM_STATE (default: slurm/local/state next to this script).
#   etc/   slurm.conf, slurmdbd.conf      log/  one log per daemon      pid/  one PID file per daemon
#   munge/ key (0700) and socket (0755)   mysql/ private MariaDB data   spool/ slurmctld state, slurmd spool
# Other knobs (read only when the config is generated, i.e. when none of the daemons is running):
#   DA_SLURM_PORT_BASE (default 16817): slurmctld=BASE, slurmd=BASE+1, slurmdbd=BASE+2, MariaDB=BASE+3
#   DA_SLURM_CPUS (default: nproc): CPUs the node advertises; more than nproc oversubscribes the cores.
# Safe to run again: running daemons (checked through /proc/PID/exe) are left alone and never started twice.
#
#   slurm/local/start.sh --check    # only report which packages are missing and whether this would install them
# DA_SLURM_PKGS (space-separated) replaces the package list; the tests use it to exercise the not-installed path.
set -Eeuo pipefail
# No silent exits: under set -e any failing command ends the script, so name the line and the command.
# Only in the script's own shell: a subshell ($(...), <(...)) keeps its plain status, which the caller handles.
trap 'rc=$?; if [[ $BASHPID == "$$" ]]; then
    echo "[slurm-local] ERROR: ${BASH_SOURCE[0]}:$LINENO: \`$BASH_COMMAND\` exited with status $rc" >&2; exit $rc; fi' ERR

CHECK_ONLY=0
case "${1:-}" in
    --check) CHECK_ONLY=1 ;;
    "") ;;
    *) echo "[slurm-local] ERROR: unknown argument '$1' (usage: start.sh [--check])" >&2; exit 2 ;;
esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${DA_SLURM_STATE:-$HERE/state}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
CLUSTER=da-local
ACCOUNT=da

ETC=$STATE/etc LOG=$STATE/log PIDS=$STATE/pid
MUNGE_SOCK=$STATE/munge/run/munge.socket
MYSQL_SOCK=$STATE/mysql/run/mysqld.sock
CONF=$ETC/slurm.conf

say() { echo "[slurm-local] $*"; }
die() { echo "[slurm-local] ERROR: $*" >&2; exit 1; }
# die with the tail of a daemon log, so the cause is visible without hunting for the file
die_log() {
    local what=$1 log=$2
    { echo "[slurm-local] ERROR: $what (log: $log)"; [[ -f $log ]] && tail -n 20 "$log" | sed 's/^/    | /'; } >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------- install
read -r -a PKGS <<<"${DA_SLURM_PKGS:-munge slurm-client slurmctld slurmd slurmdbd mariadb-server-core mariadb-client-core}"
# missing_packages PKG...: prints the ones dpkg does not list as installed. dpkg-query exits 1 as soon as one
# of them is unknown (exactly the case to detect), so its status is not an error here.
missing_packages() {
    local listed p
    listed=" $({ dpkg-query -W -f='${Package}:${Status}\n' "$@" 2>/dev/null || true; } |
        awk -F: '/install ok installed/ {print $1}' | tr '\n' ' ')"
    for p in "$@"; do [[ $listed == *" $p "* ]] || echo "$p"; done
}
mapfile -t missing < <(missing_packages "${PKGS[@]}")
if ((CHECK_ONLY)); then
    say "packages: ${PKGS[*]}"
    if ((${#missing[@]})); then
        say "missing: ${missing[*]}"
        ((EUID == 0)) && say "would install: ${missing[*]}" || say "would stop: not root, cannot install ${missing[*]}"
    else
        say "missing: none"
    fi
    exit 0
fi
if ((${#missing[@]})); then
    ((EUID == 0)) || die "packages missing (${missing[*]}) and not root: install them or rerun as root"
    say "installing ${missing[*]}"
    t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    # the Debian maintainer scripts try to start services; there is no init system here, so tell them not to
    policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1; fi
    apt_log=$STATE/log/apt.log; mkdir -p "$STATE/log"
    if ! apt-get install -y --no-install-recommends "${PKGS[@]}" >"$apt_log" 2>&1; then
        # stale package lists are the usual cause; refresh once and retry
        apt-get update >>"$apt_log" 2>&1 || true
        apt-get install -y --no-install-recommends "${PKGS[@]}" >>"$apt_log" 2>&1 ||
            { ((made_policy)) && rm -f "$policy"; die_log "apt-get install failed" "$apt_log"; }
    fi
    ((made_policy)) && rm -f "$policy"
    say "installed in $((SECONDS - t0)) s"
fi

# munged needs every folder above its socket traversable by all: a checkout under a private home (mode 0700)
# is refused here, at once, rather than by munged after the set-up
dir=$STATE
while [[ $dir != / ]]; do
    dir=$(dirname "$dir")
    perms=$(stat -c %A "$dir")
    [[ ${perms:9:1} == [xt] ]] || die "munged refuses a socket below $dir (mode ${perms:1}, not traversable by other users); run 'chmod o+x $dir' or put the cluster's state elsewhere: DA_SLURM_STATE=/tmp/da-slurm-\$USER bash $HERE/start.sh"
done

# RUN_*: what we execute. Debian's slurmctld/slurmd are alternatives symlinks to *-wlm binaries, and they must
# be run by the symlink name: Slurm decides it is the daemon from argv[0], and slurmctld started as
# "slurmctld-wlm" segfaults on a fresh state folder. BIN_*: the real file, which /proc/PID/exe points at.
for d in munged mariadbd slurmdbd slurmctld slurmd; do
    run=$(command -v "$d" || echo "/usr/sbin/$d")
    [[ -x $run ]] || die "$d not found after installing ${PKGS[*]}"
    printf -v "RUN_${d^^}" %s "$run"
    printf -v "BIN_${d^^}" %s "$(readlink -f "$run")"
done

# ------------------------------------------------------------------------------------- process helpers
# alive PIDFILE EXE: true when the PID in PIDFILE runs EXE. Checking the executable, not only the PID,
# keeps us from trusting (or signalling) an unrelated process that reused a stale PID.
alive() {
    local pidf=$1 exe=$2 pid
    [[ -s $pidf ]] || return 1
    pid=$(<"$pidf"); pid=${pid//[^0-9]/}
    [[ -n $pid && -e /proc/$pid/exe ]] || return 1
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$exe"* ]]   # "* ": "(deleted)" after a package upgrade
}
# foreign EXE PIDFILE: PIDs running EXE that are neither the one in PIDFILE nor its children (slurmctld
# keeps a forked slurmscriptd, slurmd forks per request), i.e. a Slurm that another state folder started
foreign() {
    local exe=$1 pidf=$2 mine=-1 dir link stat
    [[ -s $pidf ]] && mine=$(<"$pidf")
    # one find over /proc prints "<pid dir> <exe target>" for all processes (a readlink per process is slow)
    while read -r dir link; do
        [[ $link == "$exe"* ]] || continue
        read -r stat <"$dir/stat" 2>/dev/null || continue
        stat=${stat##*) }                                      # fields after "(comm) ": state ppid ...
        stat=${stat#* }
        [[ ${dir#/proc/} == "$mine" || ${stat%% *} == "$mine" ]] || echo "${dir#/proc/}"
    done < <(find /proc -mindepth 2 -maxdepth 2 -path '/proc/[0-9]*/exe' -printf '%h %l\n' 2>/dev/null || true)
    return 0
}
# wait_for SECONDS DESCRIPTION LOG CMD...: poll CMD every 0.2 s
wait_for() {
    local limit=$1 what=$2 log=$3; shift 3
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die_log "$what did not come up within ${limit}s" "$log"
        sleep 0.2
    done
}

any_running=0
for d in munged:$BIN_MUNGED mariadb:$BIN_MARIADBD slurmdbd:$BIN_SLURMDBD slurmctld:$BIN_SLURMCTLD slurmd:$BIN_SLURMD; do
    alive "$PIDS/${d%%:*}.pid" "${d#*:}" && any_running=1
done
# Starting a second slurmctld/slurmd/slurmdbd would fight the running one over ports and state
# (a second slurmctld kills the first), so refuse when one runs that this state folder did not start.
for d in slurmctld:$BIN_SLURMCTLD slurmd:$BIN_SLURMD slurmdbd:$BIN_SLURMDBD; do
    other=$(foreign "${d#*:}" "$PIDS/${d%%:*}.pid" | paste -sd " ")
    [[ -z $other ]] || die "a ${d%%:*} not started from $STATE is running (PID $other); stop it first (its own stop.sh)"
done

# --------------------------------------------------------------------------------------- configuration
mkdir -p "$ETC" "$LOG" "$PIDS" "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/mysql/data" "$STATE/mysql/run" \
    "$STATE/munge/etc" "$STATE/munge/run" "$STATE/munge/lib"
# munged refuses keys in group/world-accessible folders and needs a traversable (0755) socket folder
chmod 0700 "$STATE/munge/etc" "$STATE/munge/lib"
chmod 0755 "$STATE/munge/run" "$STATE/munge" "$STATE"

if ((any_running)) && [[ -f $CONF ]]; then
    say "daemons already running; keeping $CONF"
else
    BASE=${DA_SLURM_PORT_BASE:-16817}
    NPROC=$(nproc)
    CPUS=${DA_SLURM_CPUS:-$NPROC}
    MEM_TOTAL=$(free -m | awk '/^Mem:/ {print $2}')
    REAL_MEM=$((MEM_TOTAL * 9 / 10)) # slurmd drains a node that reports less memory than configured
    overrides=""
    # advertising more CPUs than exist is only accepted with config_overrides
    ((CPUS > NPROC)) && overrides="SlurmdParameters=config_overrides"
    [[ -f $STATE/mysql/slurm.pass ]] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/mysql/slurm.pass"; }
    chmod 0600 "$STATE/mysql/slurm.pass"
    DB_PASS=$(<"$STATE/mysql/slurm.pass")
    echo "$((BASE + 3))" >"$STATE/mysql/port"

    cat >"$CONF" <<EOF
# Generated by slurm/local/start.sh; edits are overwritten on the next cold start.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$BASE
SlurmdPort=$((BASE + 1))
SlurmUser=root
SlurmdUser=root
# private munge socket; cred_expire bounds how long a requeued job waits (cred_expire + 1 s)
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK,cred_expire=10
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in a container: track processes by parentage, no task binding, no usage sampling
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# submitit reads job states through sacct, so accounting is required. The "password" is the munge socket:
# without it sacct and slurmctld ignore AuthInfo's private socket when talking to slurmdbd.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((BASE + 2))
AccountingStoragePass=$MUNGE_SOCK
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
# schedule right away instead of every 60 s; tests wait on the scheduler
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1
# pack 1-CPU tasks side by side: cores are the consumable resource, memory is not enforced
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# cancelled jobs get SIGKILL 5 s after SIGTERM (default 30 s)
KillWait=5
MaxArraySize=1001
MinJobAge=300
ReturnToService=2
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
$overrides
NodeName=localhost CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

    cat >"$ETC/slurmdbd.conf" <<EOF
# Generated by slurm/local/start.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdPort=$((BASE + 2))
SlurmUser=root
PidFile=$PIDS/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
# slurmdbd 22.05 cannot reach MariaDB through a unix socket, hence TCP on 127.0.0.1
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((BASE + 3))
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 0600 "$ETC/slurmdbd.conf" # slurmdbd refuses a readable config (it holds the DB password)
fi
# clients (and slurmdbd, which looks for slurmdbd.conf beside it) find the config through SLURM_CONF
export SLURM_CONF=$CONF
printf 'export SLURM_CONF=%q\n' "$CONF" >"$STATE/env.sh"
DB_PORT=$(<"$STATE/mysql/port")

# ------------------------------------------------------------------------------------------------ munge
if alive "$PIDS/munged.pid" "$BIN_MUNGED"; then
    say "munged running (PID $(<"$PIDS/munged.pid"))"
else
    if [[ ! -s $STATE/munge/etc/munge.key ]]; then
        # 1024 random bytes is what mungekey writes; dd keeps this working on older munge too
        dd if=/dev/urandom of="$STATE/munge/etc/munge.key" bs=1024 count=1 status=none
    fi
    chmod 0400 "$STATE/munge/etc/munge.key"
    rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
    "$RUN_MUNGED" --socket="$MUNGE_SOCK" --key-file="$STATE/munge/etc/munge.key" \
        --pid-file="$PIDS/munged.pid" --log-file="$LOG/munged.log" --seed-file="$STATE/munge/lib/munged.seed" \
        >>"$LOG/munged.log" 2>&1 || die_log "munged failed to start" "$LOG/munged.log"
    wait_for 10 "munged" "$LOG/munged.log" test -S "$MUNGE_SOCK"
    say "munged started (PID $(<"$PIDS/munged.pid"))"
fi

# ---------------------------------------------------------------------------------------------- MariaDB
mysql_cli() { mariadb --no-defaults --protocol=socket -S "$MYSQL_SOCK" -uroot "$@"; }
if alive "$PIDS/mariadb.pid" "$BIN_MARIADBD"; then
    say "MariaDB running (PID $(<"$PIDS/mariadb.pid"))"
else
    if [[ ! -d $STATE/mysql/data/mysql ]]; then
        mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql/data" --auth-root-authentication-method=socket \
            --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die_log "mariadb-install-db failed" "$LOG/mariadb-install.log"
    fi
    rm -f "$MYSQL_SOCK"
    # --no-defaults: ignore /etc/mysql; --user=root: mariadbd refuses root otherwise; small buffers: it is a toy DB
    setsid "$RUN_MARIADBD" --no-defaults --user=root --datadir="$STATE/mysql/data" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$MYSQL_SOCK" --pid-file="$PIDS/mariadb.pid" \
        --log-error="$LOG/mariadb.log" --skip-name-resolve --innodb-buffer-pool-size=64M \
        --innodb-log-file-size=48M --max-connections=50 </dev/null >>"$LOG/mariadb.log" 2>&1 &
    wait_for 60 "MariaDB" "$LOG/mariadb.log" mysql_cli -e 'SELECT 1'
    # the PID file appears a moment after the socket
    wait_for 10 "MariaDB PID file" "$LOG/mariadb.log" alive "$PIDS/mariadb.pid" "$BIN_MARIADBD"
    say "MariaDB started on 127.0.0.1:$DB_PORT (PID $(<"$PIDS/mariadb.pid"))"
fi
DB_PASS=$(<"$STATE/mysql/slurm.pass")
mysql_cli -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" 2>>"$LOG/mariadb.log" ||
    die_log "could not create the slurm DB user" "$LOG/mariadb.log"

# --------------------------------------------------------------------------------------------- slurmdbd
if alive "$PIDS/slurmdbd.pid" "$BIN_SLURMDBD"; then
    say "slurmdbd running (PID $(<"$PIDS/slurmdbd.pid"))"
else
    "$RUN_SLURMDBD" >>"$LOG/slurmdbd.log" 2>&1 || die_log "slurmdbd failed to start" "$LOG/slurmdbd.log"
    wait_for 10 "slurmdbd PID file" "$LOG/slurmdbd.log" alive "$PIDS/slurmdbd.pid" "$BIN_SLURMDBD"
    say "slurmdbd started (PID $(<"$PIDS/slurmdbd.pid"))"
fi
wait_for 30 "slurmdbd (sacctmgr cannot reach it)" "$LOG/slurmdbd.log" sacctmgr -n show cluster
# register the cluster before slurmctld starts so that it attaches to it at once
if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die_log "sacctmgr add cluster failed" "$LOG/slurmdbd.log"
fi
if [[ -z $(sacctmgr -n -P show account "$ACCOUNT" format=account) ]]; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="da sweeps" organization=da >/dev/null ||
        die_log "sacctmgr add account failed" "$LOG/slurmdbd.log"
fi
if [[ -z $(sacctmgr -n -P show assoc cluster="$CLUSTER" account="$ACCOUNT" user=root format=user) ]]; then
    sacctmgr -i add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" >/dev/null ||
        die_log "sacctmgr add user failed" "$LOG/slurmdbd.log"
fi

# ------------------------------------------------------------------------------------ slurmctld, slurmd
if alive "$PIDS/slurmctld.pid" "$BIN_SLURMCTLD"; then
    say "slurmctld running (PID $(<"$PIDS/slurmctld.pid"))"
else
    "$RUN_SLURMCTLD" -f "$CONF" >>"$LOG/slurmctld.log" 2>&1 || die_log "slurmctld failed to start" "$LOG/slurmctld.log"
    wait_for 10 "slurmctld PID file" "$LOG/slurmctld.log" alive "$PIDS/slurmctld.pid" "$BIN_SLURMCTLD"
    say "slurmctld started (PID $(<"$PIDS/slurmctld.pid"))"
fi
wait_for 20 "slurmctld (scontrol ping)" "$LOG/slurmctld.log" bash -c 'scontrol ping | grep -q UP'
if alive "$PIDS/slurmd.pid" "$BIN_SLURMD"; then
    say "slurmd running (PID $(<"$PIDS/slurmd.pid"))"
else
    # -N localhost: the node name in slurm.conf, whatever this machine's hostname is
    "$RUN_SLURMD" -f "$CONF" -N localhost >>"$LOG/slurmd.log" 2>&1 || die_log "slurmd failed to start" "$LOG/slurmd.log"
    wait_for 10 "slurmd PID file" "$LOG/slurmd.log" alive "$PIDS/slurmd.pid" "$BIN_SLURMD"
    say "slurmd started (PID $(<"$PIDS/slurmd.pid"))"
fi

node_state() { sinfo -h -N -n localhost -o %T 2>/dev/null; }
end=$((SECONDS + 30))
until [[ $(node_state) =~ ^(idle|mixed|allocated) ]]; do
    if ((SECONDS >= end)); then
        echo "[slurm-local] ERROR: node localhost is '$(node_state)', not idle, after 30 s" \
            "(logs: $LOG/slurmctld.log, $LOG/slurmd.log)" >&2
        scontrol show node localhost 2>&1 | grep -E 'State|Reason' >&2 || true
        exit 1
    fi
    sleep 0.2
done
say "node localhost is $(node_state); partition debug ready (logs in $LOG)"
echo "export SLURM_CONF=$CONF"
