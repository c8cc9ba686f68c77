#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2094,SC2116  # PID lists are word-split on purpose
# Stop the test SLURM cluster started by start.sh: cancel every job, then stop slurmd,
# slurmctld and munged (waiting on their PIDs). Idempotent: exits 0 if nothing runs.
# Files under ${DGAAS_SLURM_DIR:-/var/tmp/dgaas-slurm} and /etc/slurm are kept.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
unset SLURM_CLUSTERS || true

# Job step daemons of our slurmd: slurmstepd processes whose working directory is under $DIR
# (slurmd chdirs to its log directory, $DIR/log, and slurmstepd inherits it).
our_stepds() {
    local p
    for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
        alive "$p" || continue
        if [[ $(readlink "/proc/$p/cwd" 2>/dev/null) == "$DIR"/* ]]; then
            echo "$p"
        fi
    done
}

kill_tree() {  # SIGKILL a process and all its descendants
    local p=$1 c
    for c in $(pgrep -P "$p" 2>/dev/null || true); do kill_tree "$c"; done
    kill -KILL "$p" 2>/dev/null || true
}

ctld=$(our_pids slurmctld)
slurmd=$(our_pids slurmd)
munged=$(our_pids munged)
stepds_all=$(our_stepds)
if [[ -z $ctld$slurmd$munged$stepds_all ]]; then
    echo "slurm: not running"
    exit 0
fi

# 1. Cancel every job (all users) while slurmctld is still there, wait until the queue is empty.
if [[ -n $ctld ]] && command -v squeue >/dev/null 2>&1 && scontrol ping 2>/dev/null | grep -q 'is UP'; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u || true)
    if [[ -n $jobs ]]; then
        msg "cancelling $(echo $jobs | wc -w) job(s)"
        # shellcheck disable=SC2086
        scancel --full $jobs 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
            ((i % 50 == 49)) && { scancel --full -s KILL $jobs 2>/dev/null || true; }
            sleep 0.1
        done
        [[ -n $(squeue -h -o %A 2>/dev/null) ]] && msg "WARNING: jobs still listed after 20 s: $(squeue -h -o '%A %T' | paste -sd' ' -)"
    fi
fi

# 2. Daemons, compute side first.
stop_daemon slurmd
stepds=$(our_stepds)
if [[ -n $stepds ]] && ! wait_gone 50 $stepds; then
    msg "killing leftover slurmstepd ($(echo $stepds)) and their job processes"
    for p in $stepds; do kill_tree "$p"; done
    wait_gone 20 $stepds || true
fi
stop_daemon slurmctld
stop_daemon munged

rm -f "$DIR"/run/{slurmctld,slurmd,munged}.pid
# The exited daemons are zombies until PID 1 reaps them (it can take a second or two
# in containers): wait a little so `pgrep slurm` is empty when we return.
for ((i = 0; i < 50; i++)); do
    for p in $ctld $slurmd $munged $stepds_all; do [[ -e /proc/$p ]] && break; p=; done
    [[ -z ${p:-} ]] && break
    sleep 0.1
done
left=$(for n in slurmctld slurmd munged; do our_pids "$n"; done; our_stepds)
if [[ -n $left ]]; then
    echo "slurm: ERROR: still running: $(echo $left)" >&2
    exit 1
fi
echo "slurm: stopped"
