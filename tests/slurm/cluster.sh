#!/usr/bin/env bash
# A throwaway one-node SLURM cluster on 127.0.0.1, for the tests and for trying --launcher slurm locally.
#
#   tests/slurm/cluster.sh start DIR   # installs slurmctld/slurmd/slurm-client/munge if missing (root, apt),
#                                      # writes DIR/munge.key and DIR/slurm.conf, starts munged, slurmctld, slurmd
#   export SLURM_CONF=DIR/slurm.conf   # then sbatch, squeue, scancel and `--launcher slurm` talk to it
#   tests/slurm/cluster.sh stop DIR    # cancels every job, stops the daemons and anything the jobs left running
#
# Everything lives in DIR (keys, state, logs, sockets), on free ports, so several clusters can run side by side
# and nothing under /etc is changed. Exit code 77: this machine cannot run one (not root, no apt); the reason is
# the one line on stderr. The time limits are short on purpose: a job past its limit is killed within seconds.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
NODE=node1  # the node's name in slurm.conf; slurmd is started with -N, so the host's name does not matter

cannot() { echo "$*" >&2; exit 77; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || cannot "SLURM is not installed (${missing[*]}) and installing it needs root"
    command -v apt-get >/dev/null || cannot "SLURM is not installed (${missing[*]}) and there is no apt-get"
    # Debian starts a package's daemons on install; ours run from DIR instead, so keep those off meanwhile.
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod 755 "$guard"
    fi
    echo "installing ${PACKAGES[*]}" >&2
    (apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null; }) \
        </dev/null || { [ -z "$guard" ] || rm -f "$guard"; echo "apt-get install ${PACKAGES[*]} failed" >&2; exit 1; }
    [ -z "$guard" ] || rm -f "$guard"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf() {
    local dir=$1 hardware memory
    # The node's real cores and memory, as slurmd sees them (less 512 MB for the system).
    hardware=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *RealMemory=[0-9]*//')
    memory=$(slurmd -C | head -1 | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    hardware+=" RealMemory=$((memory - 512))"
    cat >"$dir/slurm.conf" <<EOF
# A one-node test cluster written by tests/slurm/cluster.sh
ClusterName=ci
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
# Accounting is off, as on many small clusters: job states come from squeue alone (no sacct).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Fast enough for tests: scheduling right after a submit, a job past its limit or cancelled is killed 2 s after
# its SIGTERM, and an ended job stays visible to squeue for 5 minutes.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
KillWait=2
OverTimeLimit=0
MinJobAge=300
MessageTimeout=5
ReturnToService=2
NodeName=$NODE NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    local dir=$1
    install_packages
    [ "$(id -u)" -eq 0 ] || cannot "running the test cluster's slurmd needs root"
    mkdir -p "$dir/state" "$dir/spool"
    chmod 700 "$dir"
    dir=$(cd "$dir" && pwd)
    dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge.key"
    write_conf "$dir"
    export SLURM_CONF=$dir/slurm.conf
    munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" 2>>"$dir/munged.log"
    slurmctld -i 2>>"$dir/slurmctld.log"  # -i: ignore state left by an earlier cluster in this folder
    slurmd -N "$NODE" 2>>"$dir/slurmd.log"
    for _ in $(seq 100); do
        if [ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" = "idle" ]; then
            echo "$SLURM_CONF"
            return
        fi
        sleep 0.2
    done
    echo "the test cluster did not come up in 20 s; logs in $dir:" >&2
    tail -n 5 "$dir"/slurmctld.log "$dir"/slurmd.log >&2 || true
    stop "$dir"
    exit 1
}

# Processes started by this cluster: its daemons and everything they ran carry SLURM_CONF=DIR/slurm.conf.
# This script and its callers (a test session that exported SLURM_CONF) are not the cluster's.
cluster_processes() {
    local conf=$1 pid ancestors=" " up=$$
    while [ "$up" -gt 1 ]; do
        ancestors+="$up "
        up=$(awk '{print $4}' "/proc/$up/stat")
    done
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [[ "$ancestors" == *" $pid "* ]] && continue
        { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$conf" && echo "$pid"
    done
    for name in munged slurmctld slurmd; do
        [ -f "${conf%/*}/$name.pid" ] && cat "${conf%/*}/$name.pid"
    done
}

stop() {
    local dir=$1 pids
    dir=$(cd "$dir" && pwd)
    export SLURM_CONF=$dir/slurm.conf
    scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do
        [ -z "$(squeue -h -t running,completing,suspended,requeued 2>/dev/null)" ] && break
        sleep 0.2
    done
    for name in slurmd slurmctld munged; do
        [ -f "$dir/$name.pid" ] && kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
    done
    sleep 0.5
    pids=$(cluster_processes "$SLURM_CONF" | sort -u)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
}

case "${1:-}" in
    start) start "${2:?usage: $0 start DIR}" ;;
    stop) stop "${2:?usage: $0 stop DIR}" ;;
    *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
