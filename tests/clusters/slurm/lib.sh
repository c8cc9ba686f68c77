# shellcheck shell=bash disable=SC2086  # PID lists are word-split on purpose
# Shared by start.sh and stop.sh: where the cluster lives and how its daemons are found and stopped.

DIR=${DGAAS_SLURM_DIR:-/var/tmp/dgaas-slurm}
DIR=${DIR%/}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export SLURM_CONF=/etc/slurm/slurm.conf

msg() { echo "slurm: $*" >&2; }

# A process that exists and is not a zombie (PID 1 may be slow to reap).
alive() { local st; st=$(grep -m1 '^State:' "/proc/$1/status" 2>/dev/null) && [[ $st != *Z* ]]; }

# PIDs of *our* daemons: process name NAME whose command line mentions $DIR.
our_pids() {
    local p
    for p in $(pgrep -x "$1" 2>/dev/null || true); do
        alive "$p" || continue
        if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$DIR/"; then
            echo "$p"
        fi
    done
}

wait_gone() {  # wait_gone TENTHS PID...: 0 when all PIDs are gone
    local n=$1 p i
    shift
    for ((i = 0; i < n; i++)); do
        for p in "$@"; do alive "$p" && break; p=; done
        [[ -z ${p:-} ]] && return 0
        sleep 0.1
    done
    return 1
}

stop_daemon() {  # SIGTERM, wait on the processes themselves (slurmctld drops its pid file first)
    local name=$1 pids
    pids=$(our_pids "$name")
    [[ -z $pids ]] && return 0
    msg "stopping $name ($(echo $pids))"
    kill -TERM $pids 2>/dev/null || true
    if ! wait_gone 200 $pids; then
        msg "$name still alive after 20 s, sending SIGKILL"
        kill -KILL $pids 2>/dev/null || true
        wait_gone 50 $pids || msg "WARNING: $name ($pids) survived SIGKILL"
    fi
}
