#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for testing the workflow's slurm profile.
#
#   tests/slurm/cluster.sh start DIR   start munged, mariadbd, slurmdbd, slurmctld, slurmd
#   tests/slurm/cluster.sh stop DIR    stop each daemon by the PID it recorded under DIR
#
# Everything lives under DIR (configs, state, spool, logs, database) except two things
# SLURM itself insists on: munged's socket in /run/munge, and /etc/slurm/slurm.conf, which
# the Snakemake jobstep plugin needs (it clears SLURM_CONF before its inner srun). That file
# is a symlink to DIR/slurm.conf created only when absent, and removed again by `stop`.
# Exit status 3 means "cannot start here" (not root, packages missing, a foreign
# /etc/slurm/slurm.conf); the first output line then says why.
set -euo pipefail

ACTION=${1:?usage: cluster.sh start|stop DIR}
DIR=${2:?usage: cluster.sh start|stop DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
ETC_CONF=/etc/slurm/slurm.conf
CLUSTER=moequant-test
ACCOUNT=moequant

cannot() {
    echo "cannot start a local SLURM cluster: $*"
    exit 3
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "timed out waiting for $what" >&2
    return 1
}

wait_for_idle_node() {
    local state=""
    for _ in $(seq 300); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1)
        case "$state" in
            idle) return 0 ;;
            drain* | inval* | down*) echo "node localhost is $state: $(sinfo -h -N -o %E)" >&2; return 1 ;;
        esac
        sleep 0.2
    done
    echo "timed out waiting for an idle node (last state: ${state:-none})" >&2
    return 1
}

stop_pid_file() {  # stop_pid_file NAME FILE
    local name=$1 file=$2 pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$name (pid $pid) ignored SIGTERM; sending SIGKILL" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

stop() {
    stop_pid_file slurmd "$DIR/run/slurmd.pid"
    stop_pid_file slurmctld "$DIR/run/slurmctld.pid"
    stop_pid_file slurmdbd "$DIR/run/slurmdbd.pid"
    stop_pid_file mariadbd "$DIR/run/mariadbd.pid"
    if [ -s "$DIR/run/munge-dir" ]; then
        local munge_dir
        munge_dir=$(cat "$DIR/run/munge-dir")
        stop_pid_file munged "$munge_dir/munged.pid"
        cp "$munge_dir/munged.log" "$DIR/log/munged.log" 2>/dev/null || true
        rm -rf "$munge_dir" "$DIR/run/munge-dir"
    fi
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$DIR/slurm.conf" ]; then
        rm -f "$ETC_CONF"
    fi
}

start() {
    [ "$(id -u)" -eq 0 ] || cannot "needs root (munged runs as user munge, slurmd as root)"
    local missing=""
    for tool in munged mungekey mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sinfo sacctmgr sbatch; do
        command -v "$tool" >/dev/null || missing="$missing $tool"
    done
    [ -z "$missing" ] || cannot "missing$missing (install with .ci/slurm-setup.sh)"
    id munge >/dev/null 2>&1 || cannot "no 'munge' user (the munge package creates it)"
    if [ -e "$ETC_CONF" ] && ! { [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$DIR/slurm.conf" ]; }; then
        cannot "$ETC_CONF already exists and is not this test's; refusing to replace it"
    fi

    mkdir -p "$DIR"/{run,log,state,spool,mysql}
    chmod 755 "$DIR" "$DIR/run"

    # munge: own key, default socket (slurm's clients and plugins look there). munged runs as
    # user munge, which may not traverse DIR (pytest's temp folders are 0700), so its key,
    # pid and log live in a folder of its own, recorded in DIR/run/munge-dir.
    local munge_dir
    munge_dir=$(mktemp -d /tmp/moequant-munge.XXXXXX)
    echo "$munge_dir" >"$DIR/run/munge-dir"
    mkdir -p /run/munge
    chown munge:munge /run/munge "$munge_dir"
    chmod 755 /run/munge
    chmod 700 "$munge_dir"
    runuser -u munge -- mungekey --create --keyfile="$munge_dir/munge.key"
    runuser -u munge -- munged --key-file="$munge_dir/munge.key" --pid-file="$munge_dir/munged.pid" \
        --log-file="$munge_dir/munged.log" --seed-file="$munge_dir/munged.seed" --force
    wait_for 10 munged sh -c 'munge -n | unmunge'

    # MariaDB on 127.0.0.1 with its own data directory, and the slurm user
    local db_port db_socket="$DIR/run/mysql.sock"
    db_port=$(free_port)
    mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
        --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
    mariadbd --user=root --datadir="$DIR/mysql" --socket="$db_socket" --port="$db_port" \
        --bind-address=127.0.0.1 --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" \
        --skip-name-resolve >/dev/null 2>&1 &
    wait_for 30 mariadbd mariadb --socket="$db_socket" -u root -e "SELECT 1"
    mariadb --socket="$db_socket" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-test';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-test';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

    local dbd_port ctld_port slurmd_port cpus mem_mb
    dbd_port=$(free_port)
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)

    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm-test
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"

    cat >"$DIR/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
    # One pretend GPU (/dev/null as its device file): enough for the scheduler to place --gpus jobs.
    echo "NodeName=localhost Name=gpu File=/dev/null" >"$DIR/gres.conf"

    mkdir -p /etc/slurm
    [ -L "$ETC_CONF" ] || ln -s "$DIR/slurm.conf" "$ETC_CONF"
    export SLURM_CONF="$DIR/slurm.conf"

    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n show cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    slurmctld
    slurmd -N localhost
    wait_for_idle_node
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=tests Organization=tests >/dev/null
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
    echo "SLURM_CONF=$DIR/slurm.conf"
    echo "ACCOUNT=$ACCOUNT"
}

failed_start() {
    trap - ERR
    echo "--- last lines of the daemon logs under $DIR/log ---" >&2
    tail -n 5 "$DIR"/log/*.log >&2 2>/dev/null || true
    stop
    exit 1
}

case "$ACTION" in
    start)
        set -o errtrace
        trap failed_start ERR
        start
        ;;
    stop) stop ;;
    *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
