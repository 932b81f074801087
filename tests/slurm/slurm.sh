#!/usr/bin/env bash
# A throw-away Slurm cluster on this one machine, for tests and for trying the job scripts.
#
#   tests/slurm/slurm.sh install     apt-get slurm-wlm and munge (quick if already there)
#   tests/slurm/slurm.sh start [1|2] one node "n1", or two nodes "n1" and "n2" (default 2)
#   tests/slurm/slurm.sh status      the daemons we started, and sinfo
#   tests/slurm/slurm.sh stop        cancel jobs, kill exactly our daemons, remove the state
#   eval "$(tests/slurm/slurm.sh env)"   point sbatch/srun/squeue at this cluster
#
# Everything lives in $MPIFUTURES_SLURM_DIR (default /tmp/mpifutures-slurm): slurm.conf, a
# private munge key and socket, spool folders, log/ (each daemon's stderr) and "pids".
# Clients find the cluster through SLURM_CONF, so /etc/slurm is left alone. Daemons run in
# the foreground (-D/-F) as plain background jobs of this script, so the PIDs we record are
# the daemons themselves and `stop` never has to look processes up by name.
set -euo pipefail

STATE=${MPIFUTURES_SLURM_DIR:-/tmp/mpifutures-slurm}
CONF=$STATE/slurm.conf
PIDS=$STATE/pids
# Ports away from Slurm's defaults (6817/6818) so a real Slurm on the host is not disturbed.
CTLD_PORT=${MPIFUTURES_SLURM_PORT:-16817}
CPUS_PER_NODE=${MPIFUTURES_SLURM_CPUS:-4}   # more than the 2 cores: jobs of 4 ranks fit one node
WAIT_S=${MPIFUTURES_SLURM_WAIT_S:-30}       # bound for every wait in this script
# Job IDs would restart at 1 with every fresh state; start them at random instead. MPICH names
# its shared memory after the PMI job ID ("4.0"), ranks that get killed leave that file in
# /dev/shm, and a later job with the same ID on this host then hangs in MPI_Init on it.
FIRST_JOB_ID=${MPIFUTURES_SLURM_FIRST_JOB_ID:-$(((RANDOM * 32768 + RANDOM) % 60000000 + 1))}

export SLURM_CONF=$CONF

log() { echo "slurm.sh: $*" >&2; }

die() {
    log "$*"
    exit 1
}

# A start that went wrong: show why, and take down whatever did start.
start_failed() {
    log "$*"
    local f
    for f in "$STATE"/log/*; do
        echo "----- $f" >&2
        tail -n 30 "$f" >&2
    done
    cmd_stop
    exit 1
}

# Up to WAIT_S seconds for a command to succeed, polling every 0.2 s.
wait_for() {
    local deadline=$((SECONDS + WAIT_S))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

cmd_install() {
    if command -v sbatch >/dev/null && command -v slurmd >/dev/null &&
        command -v munged >/dev/null; then
        log "slurm-wlm and munge already installed"
        return
    fi
    # The lock timeout lets us queue behind another apt-get instead of failing at once.
    timeout 300 apt-get -o DPkg::Lock::Timeout=120 update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=120 \
        install -y -qq --no-install-recommends slurm-wlm munge
}

# "PID name" for each daemon recorded by `start` that is still alive. A PID counts only while
# its command line still names our state folder, so a reused PID is never signalled.
alive_pids() {
    [[ -f $PIDS ]] || return 0
    local pid name
    while read -r pid name; do
        if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$STATE/"; then
            echo "$pid $name"
        fi
    done <"$PIDS"
}

# Remove the state folder, but only one that this script made (or an empty one): a mistaken
# MPIFUTURES_SLURM_DIR must not cost anybody their files.
remove_state() {
    [[ -e $STATE ]] || return 0
    if [[ -f $CONF || -f $PIDS || -z $(ls -A "$STATE") ]]; then
        rm -rf "$STATE"
    else
        die "$STATE exists and is not ours (no slurm.conf or pids in it): not touching it"
    fi
}

write_conf() {
    local nodes=$1 host=$2 mem
    # Declared memory must not exceed what slurmd finds, or every --mem request is refused.
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    cat >"$CONF" <<EOF
# Written by tests/slurm/slurm.sh: a test cluster on one host ($host).
ClusterName=mpifutures
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
TmpFS=$STATE/tmp/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
# No cgroups in a container: track processes through /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# pmi2 is what the MPICH wheel speaks; with --mpi=none ranks all come up as 0 of 1.
MpiDefault=pmi2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
FirstJobId=$FIRST_JOB_ID
MailProg=/bin/true
ReturnToService=2
# Refuse jobs that can never run, instead of leaving them PENDING and sbatch --wait hanging.
EnforcePartLimits=ALL
# sbatch --wait polls with backoff until the job record is purged: keep records briefly.
MinJobAge=4
KillWait=5
# Let each node declare more CPUs than the machine has, to oversubscribe its cores.
SlurmdParameters=config_overrides
EOF
    local i
    for ((i = 1; i <= nodes; i++)); do
        echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((CTLD_PORT + i))" \
            "CPUs=$CPUS_PER_NODE RealMemory=$mem State=UNKNOWN" >>"$CONF"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$CONF"
}

# Every node of ours is up and idle (sinfo prints one state per line, nothing else).
all_idle() {
    local states
    states=$(timeout 10 sinfo --noheader --Node --format=%t) || return 1
    [[ -n $states ]] && ! grep -qv '^idle$' <<<"$states"
}

cmd_start() {
    local nodes=${1:-2} host
    [[ $nodes == 1 || $nodes == 2 ]] || die "start takes 1 or 2 nodes, not '$nodes'"
    if [[ -n $(alive_pids) ]]; then
        log "already running (stop it first to change the node count):"
        cmd_status
        return
    fi
    command -v slurmctld >/dev/null || die "slurmctld not found: run '$0 install' first"
    remove_state
    # munged requires the socket's folder to be searchable by all, and the key private.
    mkdir -p "$STATE/munge/key" "$STATE/ctld" "$STATE/log"
    chmod 755 "$STATE" "$STATE/munge"
    chmod 700 "$STATE/munge/key"
    local i
    for ((i = 1; i <= nodes; i++)); do mkdir -p "$STATE/spool/n$i" "$STATE/tmp/n$i"; done

    host=$(hostname)
    if ! getent hosts "$host" >/dev/null; then
        log "adding '$host' to /etc/hosts: Slurm must resolve its own host name"
        echo "127.0.0.1 $host" >>/etc/hosts
    fi
    write_conf "$nodes" "$host"
    mungekey -c -k "$STATE/munge/key/munge.key"

    : >"$PIDS"
    munged -F --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/key/munge.key" \
        --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge/seed" \
        >"$STATE/log/munged.log" 2>&1 &
    echo "$! munged" >>"$PIDS"
    wait_for test -S "$STATE/munge/munge.socket" || start_failed "munged did not create its socket"

    slurmctld -D -f "$CONF" >"$STATE/log/slurmctld.log" 2>&1 &
    echo "$! slurmctld" >>"$PIDS"
    wait_for timeout 5 scontrol ping || start_failed "slurmctld did not answer"

    for ((i = 1; i <= nodes; i++)); do
        slurmd -D -N "n$i" -f "$CONF" >"$STATE/log/slurmd-n$i.log" 2>&1 &
        echo "$! slurmd-n$i" >>"$PIDS"
    done
    wait_for all_idle ||
        start_failed "nodes not idle after ${WAIT_S}s: $(sinfo -N 2>&1 | tr '\n' ' ')"
    log "up: $nodes node(s); use it with: export SLURM_CONF=$CONF"
}

cmd_stop() {
    if [[ -f $PIDS ]] && [[ -n $(alive_pids) ]]; then
        # Cancel jobs first, so no job steps are left behind once slurmd is gone.
        timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while [[ -n $(timeout 5 squeue --noheader 2>/dev/null) ]] && ((SECONDS < deadline)); do
            sleep 0.5
        done
        local pid name
        # All at once: each daemon takes a second or two to exit, none needs another to do so.
        for pid in $(alive_pids | cut -d' ' -f1); do kill -TERM "$pid" 2>/dev/null || true; done
        deadline=$((SECONDS + WAIT_S))
        while [[ -n $(alive_pids) ]] && ((SECONDS < deadline)); do sleep 0.2; done
        alive_pids | while read -r pid name; do
            log "$name ($pid) ignored SIGTERM for ${WAIT_S}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        done
        wait_for test -z "$(alive_pids)" || log "still alive after SIGKILL: $(alive_pids)"
    fi
    remove_state
    log "stopped"
}

cmd_status() {
    if [[ -z $(alive_pids) ]]; then
        echo "not running"
        return 3
    fi
    alive_pids
    timeout 10 sinfo --Node --long
}

case ${1:-} in
install) cmd_install ;;
start) cmd_start "${2:-2}" ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 install | start [1|2] | stop | status | env" >&2
    exit 2
    ;;
esac
