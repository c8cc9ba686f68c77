#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2094,SC2116  # PID lists are word-split on purpose
# Bring up a real single-node SLURM cluster (munged + slurmctld + slurmd) for tests.
#
#   tests/clusters/slurm/start.sh        # idempotent: ~0.1 s when already up
#
# Node `localhost` (127.0.0.1), 8 CPUs advertised, 2 fake GPUs (gres), partitions
# `gpu` (default) and `cpu_test`. Needs root and Debian 12/13 (SLURM 22.05 / 24.11).
# State, spool, logs, pid files, munge key and fake GPU device nodes live under
# ${DGAAS_SLURM_DIR:-/var/tmp/dgaas-slurm}; config goes to /etc/slurm/{slurm,gres}.conf.
# Stop it with stop.sh next to this file.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
NODE=localhost
NCPU=8
NGPU=2
PARTITIONS=(gpu cpu_test)
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
GRES_CONF=$CONF_DIR/gres.conf
MUNGE_SOCKET_DIR=/run/munge          # default socket (see README): clients need no AuthInfo
MUNGE_KEY=$DIR/munge/munge.key
# Settings of the caller must not leak into scontrol/sinfo/daemons.
unset SLURM_CLUSTERS SLURM_PARTITION SBATCH_PARTITION SLURM_TIME_FORMAT || true

die() {  # die MESSAGE [LOGFILE...]
    local m=$1 f
    shift
    echo "slurm: ERROR: $m" >&2
    for f in "$@"; do
        if [[ -s $f ]]; then
            echo "---- last lines of $f ----" >&2
            tail -n 25 "$f" >&2 || true
        fi
    done
    exit 1
}

running() { [[ -n $(our_pids "$1") ]]; }

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1; }
node_ok() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

slurm_version() { slurmctld -V 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1; }

summary() {
    local parts gres ngpu
    parts=$(sinfo -h -o %R 2>/dev/null | paste -sd, -)
    gres=$(sinfo -h -n "$NODE" -o %G 2>/dev/null | head -n 1)
    ngpu=$(grep -oE 'gpu(:[A-Za-z0-9_]+)?:[0-9]+' <<<"$gres" | grep -oE '[0-9]+$' | head -n 1)
    echo "slurm: up ($(slurm_version)), partitions ${parts:-?}, ${ngpu:-0} gpus"
}

# ---------------------------------------------------------------- configuration
mem_mb() {  # RealMemory: 90% of MemTotal, leaves room so the node is never "Low RealMemory"
    local kb
    kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    echo $((kb * 9 / 10 / 1024))
}

render_slurm_conf() {
    cat <<EOF
# Written by tests/clusters/slurm/start.sh (dgaas-flow test cluster). Overwritten on every start.
ClusterName=dgaas
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
GresTypes=gpu
# Fast turnaround for tests.
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
MinJobAge=300
# One node, 2 fake GPUs (gres.conf); both partitions share it.
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$(mem_mb) Gres=gpu:$NGPU State=UNKNOWN
PartitionName=${PARTITIONS[0]} Nodes=$NODE Default=YES MaxTime=INFINITE OverSubscribe=FORCE:2 State=UP
PartitionName=${PARTITIONS[1]} Nodes=$NODE Default=NO MaxTime=INFINITE OverSubscribe=FORCE:2 State=UP
EOF
}

render_gres_conf() {
    local i
    echo "# Written by tests/clusters/slurm/start.sh: fake GPUs (character devices under $DIR/dev)."
    for ((i = 0; i < NGPU; i++)); do
        echo "NodeName=$NODE Name=gpu File=$DIR/dev/nvidia$i"
    done
}

devices_ok() {
    local i
    for ((i = 0; i < NGPU; i++)); do
        [[ -c $DIR/dev/nvidia$i ]] || return 1
    done
}

SLURM_CONF_TEXT=$(render_slurm_conf)
GRES_CONF_TEXT=$(render_gres_conf)
config_current() {
    [[ -f $CONF && -f $GRES_CONF ]] &&
        [[ $(<"$CONF") == "$SLURM_CONF_TEXT" && $(<"$GRES_CONF") == "$GRES_CONF_TEXT" ]]
}

# ---------------------------------------------------------------- fast path
have_tools() {
    local t
    for t in pgrep munged munge unmunge slurmctld slurmd scontrol sinfo sbatch squeue scancel srun; do
        command -v "$t" >/dev/null 2>&1 || return 1
    done
}

if have_tools && config_current && devices_ok &&
    running munged && running slurmctld && running slurmd &&
    ctld_up && node_ok; then
    summary
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons as root)"

# ---------------------------------------------------------------- packages
install_packages() {
    local pkgs=(munge slurmctld slurmd slurm-client) added_policy=
    command -v pgrep >/dev/null 2>&1 || pkgs+=(procps)
    export DEBIAN_FRONTEND=noninteractive
    # Never let apt start the services itself (they would clash with ours).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    msg "installing ${pkgs[*]}"
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$DIR/log/apt.log" 2>&1; then
        msg "install failed, running apt-get update and retrying"
        apt-get update -q >>"$DIR/log/apt.log" 2>&1 || true
        if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$DIR/log/apt.log" 2>&1; then
            [[ -n $added_policy ]] && rm -f /usr/sbin/policy-rc.d
            die "apt-get install ${pkgs[*]} failed" "$DIR/log/apt.log"
        fi
    fi
    [[ -n $added_policy ]] && rm -f /usr/sbin/policy-rc.d
    return 0
}
mkdir -p "$DIR/log"
have_tools || install_packages
have_tools || die "SLURM/munge commands still missing after installing the packages"

VERSION=$(slurm_version)
[[ -n $VERSION ]] || die "cannot read the SLURM version from 'slurmctld -V'"
case $VERSION in
    1[0-9].* | 20.* | 21.*) die "SLURM $VERSION is too old (need >= 22.05)" ;;
esac

# srun/salloc tell slurmctld their host by name: if it does not resolve, every srun
# hangs ~10 s at its end (seen with SLURM 24.11 in a chroot without /etc/hosts).
if ! getent hosts "$(hostname)" >/dev/null 2>&1; then
    msg "WARNING: hostname '$(hostname)' does not resolve; srun will be slow (add it to /etc/hosts)"
fi

# ---------------------------------------------------------------- files
mkdir -p "$DIR"/{state,spool/slurmd,log,run,munge,dev} "$CONF_DIR"
chmod 755 "$DIR"
chmod 700 "$DIR/munge"

for ((i = 0; i < NGPU; i++)); do
    dev=$DIR/dev/nvidia$i
    [[ -c $dev ]] && continue
    rm -f "$dev"
    # Same major/minor as the NVIDIA driver's /dev/nvidiaN; slurmd only stat()s them.
    mknod -m 666 "$dev" c 195 "$i" 2>/dev/null || ln -s /dev/null "$dev"
    [[ -c $dev ]] || die "cannot create a character device at $dev (mknod not permitted?)"
done

if [[ ! -s $MUNGE_KEY ]]; then
    if command -v mungekey >/dev/null 2>&1; then
        rm -f "$MUNGE_KEY"
        mungekey --create --keyfile="$MUNGE_KEY" >/dev/null 2>&1 ||
            die "mungekey --create --keyfile=$MUNGE_KEY failed"
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
fi
chmod 600 "$MUNGE_KEY"

restart_slurm=
if ! config_current; then
    printf '%s\n' "$SLURM_CONF_TEXT" >"$CONF"
    printf '%s\n' "$GRES_CONF_TEXT" >"$GRES_CONF"
    chmod 644 "$CONF" "$GRES_CONF"
    restart_slurm=1
fi
# `printf '%s\n'` adds the newline that $(<file) strips, so the comparison above holds next time.

# ---------------------------------------------------------------- munged
wait_for() {  # wait_for SECONDS COMMAND...: poll every 0.1 s
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

if ! running munged || ! munge_ok; then
    stop_daemon munged
    mkdir -p "$MUNGE_SOCKET_DIR"
    chmod 755 "$MUNGE_SOCKET_DIR"
    if munge_ok; then
        # Someone else's munged owns the default socket; SLURM works with it as long as
        # all our daemons and clients use the same one, which they do.
        msg "using an already running munged on $MUNGE_SOCKET_DIR (not started by this script)"
    else
        msg "starting munged"
        munged --key-file="$MUNGE_KEY" \
            --pid-file="$DIR/run/munged.pid" \
            --log-file="$DIR/log/munged.log" \
            --seed-file="$DIR/munge/munged.seed" >>"$DIR/log/munged.log" 2>&1 ||
            die "munged failed to start" "$DIR/log/munged.log"
        wait_for 10 munge_ok || die "munged does not answer after 10 s" "$DIR/log/munged.log"
    fi
fi

# ---------------------------------------------------------------- slurmctld + slurmd
if [[ -n $restart_slurm ]]; then
    if running slurmd || running slurmctld; then
        msg "configuration changed, restarting slurmd and slurmctld"
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
fi

if running slurmctld && ! wait_for 5 ctld_up; then
    msg "slurmctld is running but does not answer, restarting it"
    stop_daemon slurmctld
fi
if ! running slurmctld; then
    msg "starting slurmctld $VERSION"
    # -c: start from empty job state, -i: ignore errors in old state files.
    slurmctld -c -i -f "$CONF" -L "$DIR/log/slurmctld.log" >>"$DIR/log/slurmctld.log" 2>&1 ||
        die "slurmctld failed to start" "$DIR/log/slurmctld.log"
fi
wait_for 30 ctld_up || die "slurmctld not UP after 30 s (scontrol ping)" "$DIR/log/slurmctld.log"

if ! running slurmd; then
    msg "starting slurmd"
    slurmd -N "$NODE" -f "$CONF" -L "$DIR/log/slurmd.log" >>"$DIR/log/slurmd.log" 2>&1 ||
        die "slurmd failed to start" "$DIR/log/slurmd.log"
fi

resumed=
node_ready() {
    local s
    s=$(node_state)
    if [[ -z $resumed && $s =~ drain|down|fail ]] && running slurmd; then
        # ReturnToService=2 brings DOWN nodes back by itself; DRAINED ones need a resume.
        if [[ $s =~ drain|fail ]]; then
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            resumed=1
        fi
    fi
    [[ $s =~ ^(idle|mixed|allocated|completing)$ ]]
}
if ! wait_for 30 node_ready; then
    reason=$(scontrol show node "$NODE" 2>/dev/null | grep -oE 'Reason=.*' || true)
    running slurmd || msg "slurmd is not running"
    die "node $NODE is '$(node_state)' instead of idle after 30 s ${reason:+($reason)}" \
        "$DIR/log/slurmd.log" "$DIR/log/slurmctld.log"
fi

# slurmctld runs its first scheduling cycle ~3 s after it starts; jobs submitted before wait
# for it. Wait for it here so the first test job starts at once.
sched_ran() {
    sdiag 2>/dev/null | awk '/^Main schedule statistics/ {m = 1}
        m && /Total cycles:/ {n = $3; exit} END {exit !(n > 0)}'
}
wait_for 15 sched_ran || msg "WARNING: no scheduling cycle within 15 s of start (sdiag)"

summary
