#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to run the workflow's SLURM profile for real
# (tests/test_slurm.py; docs/cluster.md, "A local SLURM cluster"). Needs Debian's slurm-wlm and munge
# (`apt-get install slurm-wlm munge`) and root (the daemons run as root, as SlurmUser).
#
#   scripts/local_slurm.sh start     # write slurm.conf, start munged, slurmctld and slurmd; wait for the node
#   eval "$(scripts/local_slurm.sh env)"   # SLURM_CONF for sbatch/squeue/snakemake in this shell
#   snakemake --workflow-profile workflow/profiles/slurm --configfile config/smoke.yaml data
#   scripts/local_slurm.sh stop      # stop the three daemons (by their pid files)
#
# Everything lives in $DND_SLURM_DIR (default /tmp/dnd-local-slurm): the config, state, spool, logs
# and, unless a munged already runs, a private munge key; nothing under /etc is changed. At run
# time slurmd caches the config in /run/slurm/conf (configless: the job steps' srun reads it
# there) and munge listens on /run/munge/munge.socket.2. The node is in the two
# partitions the profile names, "cpu" and "gpu", and advertises $DND_SLURM_CPUS CPUs (default 16),
# $DND_SLURM_MEM_MB MB (default 200000) and one GPU (a count only) whatever the machine has
# (SlurmdParameters=config_overrides), so the profile's requests are accepted unchanged. Nothing
# enforces them (cgroup-free: proctrack/linuxproc, task/none): jobs share the real cores and memory.
set -euo pipefail

DIR=${DND_SLURM_DIR:-/tmp/dnd-local-slurm}
CPUS=${DND_SLURM_CPUS:-16}
MEM_MB=${DND_SLURM_MEM_MB:-200000}
PORT=${DND_SLURM_PORT:-6817}
NODE=$(hostname -s)

die() { echo "local_slurm: $*" >&2; exit 1; }

write_conf() {
    mkdir -p "$DIR"/{state,spool,log,munge}
    chmod 700 "$DIR/munge"
    cat > "$DIR/slurm.conf" <<EOF
# one-node cluster written by scripts/local_slurm.sh
ClusterName=dndlocal
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
SlurmctldParameters=enable_configless
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    echo "NodeName=$NODE Name=gpu File=/dev/null Count=1" > "$DIR/gres.conf"
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    for exe in munged slurmctld slurmd sinfo; do
        command -v "$exe" >/dev/null || [[ -x /usr/sbin/$exe ]] || die "$exe not found (apt-get install slurm-wlm munge)"
    done
    [[ $(id -u) == 0 ]] || die "run as root (the daemons run as SlurmUser root)"
    write_conf
    export SLURM_CONF=$DIR/slurm.conf PATH=$PATH:/usr/sbin
    # munge on its standard socket (configless slurmd authenticates before it has a config): an
    # already running munged is used as it is, else one is started with a private key
    if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        mkdir -p /run/munge
        [[ -f $DIR/munge/munge.key ]] || { head -c 1024 /dev/urandom > "$DIR/munge/munge.key"; chmod 600 "$DIR/munge/munge.key"; }
        munged --force --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
            --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
            || die "munged did not start ($DIR/log/munged.log)"
    fi
    alive "$DIR/slurmctld.pid" || slurmctld -f "$SLURM_CONF" -i || die "slurmctld did not start ($DIR/log/slurmctld.log)"
    # configless: slurmd fetches the config from slurmctld and caches it in /run/slurm/conf, where the
    # job steps' srun finds it (the jobstep executor drops SLURM_CONF from the job's environment)
    alive "$DIR/slurmd.pid" || slurmd --conf-server "127.0.0.1:$PORT" || die "slurmd did not start ($DIR/log/slurmd.log)"
    for _ in $(seq 60); do
        state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)
        if [[ $state == idle* || $state == mix* || $state == alloc* ]]; then
            echo "local_slurm: node $NODE $state; export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 1
    done
    die "node $NODE not idle after 60 s (state '${state:-none}'; logs in $DIR/log)"
}

stop() {
    for pid in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
        if alive "$pid"; then
            p=$(cat "$pid")
            kill "$p"
            for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        fi
        rm -f "$pid"
    done
    # slurmd's configless cache of this cluster's config goes with it: left behind, it sends every
    # Slurm client to a controller that is gone, and each waits ~9 s for it (Snakemake's SLURM plugin
    # runs `scontrol show config` whenever Snakemake starts, even for a local run)
    if grep -qs "written by scripts/local_slurm.sh" /run/slurm/conf/slurm.conf; then
        rm -rf /run/slurm/conf
    fi
    echo "local_slurm: stopped ($DIR kept)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$DIR/slurm.conf" ;;
    *) die "usage: $0 start|stop|env" ;;
esac
