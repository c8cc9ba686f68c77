# shellcheck shell=bash disable=SC2034  # variables used by start.sh / stop.sh
# Shared by start.sh and stop.sh (sourced, not run). See README.md.
#
# Layout under $DGAAS_HTCONDOR_DIR (default /var/lib/dgaas-htcondor):
#   root/                Debian 13 chroot with minicondor (Debian 12 hosts only)
#   pool/                config, logs, spool, execute dir, keys; bind-mounted into the
#                        chroot at the same path, so paths read the same inside and out
#   tokens/              IDTOKEN for host-side clients (htcondor2 bindings)
#   bin/                 host-side wrappers: condor_submit, condor_q, ...
#   host-condor_config   CONDOR_CONFIG for host-side clients
#   env.sh               source it: PATH (bin/ first) and CONDOR_CONFIG

DIR=$(realpath -m -- "${DGAAS_HTCONDOR_DIR:-/var/lib/dgaas-htcondor}")
ROOT=$DIR/root
POOL=$DIR/pool
TOKENS=$DIR/tokens
BIN=$DIR/bin
CONFIG=$POOL/etc/condor_config
HOST_CONFIG=$DIR/host-condor_config
PIDFILE=$POOL/master.pid
BINDS_FILE=$POOL/binds

POOL_USER=dgaas         # the user the whole pool (daemons and jobs) runs as
POOL_UID=1000           # host root is mapped to this uid in a user namespace
POOL_GID=1000
DOMAIN=dgaas.local      # UID_DOMAIN and TRUST_DOMAIN
WRAPPED_TOOLS="condor_submit condor_q condor_rm condor_status condor_history condor_config_val condor_token_create condor_version condor_off condor_who condor_reconfig"

log() { echo "htcondor: $*" >&2; }
die() { echo "htcondor: ERROR: $*" >&2; exit 1; }

# chroot: Debian 13 minicondor in a debootstrap chroot (Debian 12 and anything else);
# host:   minicondor from the host's own packages (Debian 13). DGAAS_HTCONDOR_MODE overrides.
pool_mode() {
    if [ -n "${DGAAS_HTCONDOR_MODE:-}" ]; then echo "$DGAAS_HTCONDOR_MODE"; return; fi
    local id="" version_id=""
    if [ -r /etc/os-release ]; then
        id=$(. /etc/os-release; echo "${ID:-}")
        version_id=$(. /etc/os-release; echo "${VERSION_ID:-}")
    fi
    if [ "$id" = debian ] && [ "$version_id" = 13 ]; then echo host; else echo chroot; fi
}
MODE=$(pool_mode)
case "$MODE" in
    chroot) NEWROOT=$ROOT ;;
    host) NEWROOT= ;;
    *) die "DGAAS_HTCONDOR_MODE must be chroot or host, not '$MODE'" ;;
esac

# in_pool SECONDS CMD...: run CMD with a time limit as the pool user (uid 1000 in a user
# namespace; root outside), inside the chroot in chroot mode, with the pool's config.
in_pool() {
    local secs=$1 wd=$PWD
    shift
    [ -d "$NEWROOT$wd" ] || wd=/
    local args=(--user "--map-user=$POOL_UID" "--map-group=$POOL_GID")
    [ -z "$NEWROOT" ] || args+=("--root=$NEWROOT" "--wd=$wd")
    timeout "$secs" env -u CONDOR_CONFIG CONDOR_CONFIG="$CONFIG" unshare "${args[@]}" "$@"
}

# Mount points under $1 (deepest first), decoded from /proc/self/mountinfo.
mounts_under() {
    local top=$1 mp
    while read -r _ _ _ _ mp _; do
        mp=$(printf '%b' "$mp")
        case "$mp" in "$top" | "$top"/*) echo "$mp" ;; esac
    done < /proc/self/mountinfo | sort -r -u
}

unmount_under() {
    local top=$1 mp _
    for _ in 1 2 3; do
        while read -r mp; do
            [ -n "$mp" ] || continue
            umount "$mp" 2> /dev/null || umount -l "$mp" 2> /dev/null || true
        done < <(mounts_under "$top")
        [ -z "$(mounts_under "$top")" ] && return 0
    done
    die "could not unmount: $(mounts_under "$top" | tr '\n' ' ')"
}

# "running" if $1 is a live (not zombie) process, else nothing.
pid_alive() {
    local pid=$1 state
    [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2> /dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

master_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2> /dev/null) || return 1
    pid_alive "$pid" || return 1
    [ "$(cat "/proc/$pid/comm" 2> /dev/null)" = condor_master ] || return 1
    echo "$pid"
}

# PIDs of every live process of this pool: in chroot mode everything whose root
# directory is the chroot (daemons, jobs, wrapper calls); in host mode everything that
# carries this pool's CONDOR_CONFIG in its environment, plus descendants of the master.
pool_pids() {
    local p pid
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" != $$ ] && [ "$pid" != "$BASHPID" ] || continue
        pid_alive "$pid" || continue
        if [ -n "$NEWROOT" ]; then
            [ "$(readlink "$p/root" 2> /dev/null)" = "$NEWROOT" ] && echo "$pid"
        else
            tr '\0' '\n' < "$p/environ" 2> /dev/null | grep -qxF "CONDOR_CONFIG=$CONFIG" && echo "$pid"
        fi
    done
}

wait_gone() { # wait_gone SECONDS: until no pool process is left
    local deadline=$((SECONDS + $1))
    while [ -n "$(pool_pids)" ]; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# Stop everything: remove jobs, stop the master and its daemons, kill leftovers,
# unmount what start.sh mounted. Idempotent.
pool_stop() {
    local pid rm_ok=0
    if pid=$(master_pid); then
        if in_pool 20 condor_rm -all > /dev/null 2>&1; then
            rm_ok=1
            # purge removed jobs kept by leave_in_queue (Parsl sets it); 1 if none is left
            in_pool 20 condor_rm -all -forcex > /dev/null 2>&1 || true
        fi
        kill -TERM "$pid" 2> /dev/null || true
        local deadline=$((SECONDS + 20))
        while pid_alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        pid_alive "$pid" && kill -QUIT "$pid" 2> /dev/null || true
    fi
    local master
    master=$(cat "$PIDFILE" 2> /dev/null) || true
    if [ -n "$(pool_pids)" ]; then
        pool_pids | xargs -r kill -TERM 2> /dev/null || true
        wait_gone 10 || { pool_pids | xargs -r kill -KILL 2> /dev/null || true; }
        wait_gone 10 || die "processes left behind: $(pool_pids | tr '\n' ' ')"
    fi
    # The master's parent (PID 1 once start.sh has exited) reaps it a little later;
    # wait (not fatal) so that pgrep shows nothing when stop returns.
    local deadline=$((SECONDS + 10))
    while [ -n "$master" ] && [ -e "/proc/$master" ] && [ $SECONDS -lt $deadline ] \
        && [ "$(cat "/proc/$master/comm" 2> /dev/null)" = condor_master ]; do sleep 0.2; done
    rm -f "$PIDFILE"
    # If the schedd could not be asked to remove the jobs, drop its queue so that no
    # job comes back on the next start (cluster ids then restart at 1).
    [ "$rm_ok" = 1 ] || rm -f "$POOL"/spool/job_queue.log*
    if [ -n "$NEWROOT" ] && [ -d "$NEWROOT" ]; then unmount_under "$NEWROOT"; fi
    rm -f "$BINDS_FILE"
}
