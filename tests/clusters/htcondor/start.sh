#!/usr/bin/env bash
# Bring up a real HTCondor personal pool (collector, negotiator, schedd, startd) for
# tests; idempotent: a healthy pool returns at once, a half-up one is repaired.
# See README.md. Needs root (mounts, debootstrap, apt) and, the first time, apt access.
#
# Environment:
#   DGAAS_HTCONDOR_DIR     where everything lives (default /var/lib/dgaas-htcondor;
#                          not under /tmp, which is bind-mounted into the chroot)
#   DGAAS_HTCONDOR_PYTHON  python whose sys.base_prefix jobs need (default python3)
#   DGAAS_HTCONDOR_BINDS   more host paths (space separated) to bind into the chroot
#   DGAAS_HTCONDOR_MODE    chroot | host (default: host on Debian 13, else chroot)
#   DGAAS_HTCONDOR_MIRROR  Debian mirror for debootstrap (default: read from apt sources)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

[ "$(id -u)" = 0 ] || die "start.sh must run as root (it mounts and installs packages)"
case "$DIR/" in /tmp/*) die "DGAAS_HTCONDOR_DIR=$DIR must not be under /tmp (bound into the chroot)" ;; esac
mkdir -p "$DIR"
exec 9> "$DIR/.lock"
flock -w 600 9 || die "another start.sh/stop.sh holds $DIR/.lock"

# ---------------------------------------------------------------- desired binds
# Host paths bound into the chroot at the same paths, so that jobs can run the host's
# Python, read the checkout and write Parsl's run_dir: /tmp, the Python's base_prefix,
# /work if present, and $DGAAS_HTCONDOR_BINDS. Paths inside another listed path are
# covered by it and dropped.
desired_binds() {
    local py=${DGAAS_HTCONDOR_PYTHON:-python3} base p q
    local -a cand=(/tmp)
    if base=$("$py" -c 'import sys; print(sys.base_prefix)' 2> /dev/null); then
        cand+=("$base")
    else
        log "warning: '$py' not found; jobs will not see a host Python"
    fi
    [ -d /work ] && cand+=(/work)
    # shellcheck disable=SC2206
    cand+=(${DGAAS_HTCONDOR_BINDS:-})
    local -a real=()
    for p in "${cand[@]}"; do
        [ -e "$p" ] || { log "warning: bind path $p does not exist; skipped"; continue; }
        p=$(realpath -- "$p")
        [ "$p" != / ] || die "cannot bind / into the chroot"
        case "$DIR/" in "$p"/*) die "bind path $p contains $DIR (the chroot would appear inside itself)" ;; esac
        case "$p/" in "$DIR"/*) die "bind path $p is inside $DIR" ;; esac
        real+=("$p")
    done
    # keep the outermost paths only
    for p in "${real[@]}"; do
        for q in "${real[@]}"; do
            [ "$p" != "$q" ] && case "$p/" in "$q"/*) continue 2 ;; esac
        done
        echo "$p"
    done | sort -u
}

# ---------------------------------------------------------------- installation
apt_install_host() { # apt_install_host PKG...: install on the host, apt-get update if needed
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" > "$DIR/apt.log" 2>&1 \
        || { apt-get update -q >> "$DIR/apt.log" 2>&1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >> "$DIR/apt.log" 2>&1; } \
        || { tail -20 "$DIR/apt.log" >&2; die "apt-get install $* failed (log: $DIR/apt.log)"; }
}

# The Debian mirror the host's apt already uses (the URI serving the host's own suite).
apt_mirror() {
    if [ -n "${DGAAS_HTCONDOR_MIRROR:-}" ]; then echo "$DGAAS_HTCONDOR_MIRROR"; return; fi
    local codename uri
    codename=$(. /etc/os-release; echo "${VERSION_CODENAME:-}")
    # deb822 stanzas: first URI of an enabled "deb" stanza whose Suites has $codename
    uri=$(cat /etc/apt/sources.list.d/*.sources 2> /dev/null | awk -v cn="$codename" '
        function flush() {
            if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " cn " ") && uri != "") print uri
            types = suites = uri = ""; enabled = "yes"
        }
        BEGIN { enabled = "yes" }
        /^[ \t]*$/ { flush(); next }
        /^#/ { next }
        tolower($1) == "types:" { $1 = ""; types = $0; sub(/^ +/, "", types) }
        tolower($1) == "suites:" { $1 = ""; suites = $0; sub(/^ +/, "", suites) }
        tolower($1) == "uris:" { uri = $2 }
        tolower($1) == "enabled:" { enabled = tolower($2) }
        END { flush() }' | sed -n 1p)
    # one-line format: deb [options] URI SUITE COMPONENTS
    [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2> /dev/null \
        | sed -e 's/#.*//' -e 's/\[[^]]*\]//' | awk -v cn="$codename" '$1 == "deb" && $3 == cn { print $2 }' | sed -n 1p)
    [ -n "$uri" ] || die "no Debian mirror for '$codename' in /etc/apt/sources.list*; set DGAAS_HTCONDOR_MIRROR"
    echo "$uri"
}

build_chroot() {
    [ -f "$ROOT/.dgaas-ready" ] && return
    local partial=$DIR/root.partial mirror t0=$SECONDS
    for d in "$ROOT" "$partial"; do
        if [ -d "$d" ]; then
            unmount_under "$d"
            rm -rf --one-file-system "$d"
        fi
    done
    command -v debootstrap > /dev/null || apt_install_host debootstrap
    mirror=$(apt_mirror)
    log "building a Debian 13 (trixie) chroot with minicondor in $ROOT (about a minute)"
    debootstrap --variant=minbase trixie "$partial" "$mirror" > "$DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$DIR/debootstrap.log" >&2; die "debootstrap failed (log: $DIR/debootstrap.log)"; }
    printf '#!/bin/sh\nexit 101\n' > "$partial/usr/sbin/policy-rc.d"
    chmod 755 "$partial/usr/sbin/policy-rc.d"
    mount -t proc proc "$partial/proc"
    if ! { chroot "$partial" apt-get update -q && DEBIAN_FRONTEND=noninteractive chroot "$partial" \
        apt-get install -y -q --no-install-recommends minicondor; } > "$DIR/chroot-apt.log" 2>&1; then
        unmount_under "$partial"
        tail -20 "$DIR/chroot-apt.log" >&2
        die "installing minicondor in the chroot failed (log: $DIR/chroot-apt.log)"
    fi
    chroot "$partial" apt-get clean
    rm -rf "$partial"/var/lib/apt/lists/*
    unmount_under "$partial"
    # the pool user: host root is mapped to it by unshare --map-user
    grep -q "^$POOL_USER:" "$partial/etc/group" || echo "$POOL_USER:x:$POOL_GID:" >> "$partial/etc/group"
    grep -q "^$POOL_USER:" "$partial/etc/passwd" \
        || echo "$POOL_USER:x:$POOL_UID:$POOL_GID:dgaas HTCondor pool:/home/$POOL_USER:/bin/sh" >> "$partial/etc/passwd"
    mkdir -p "$partial/home/$POOL_USER"
    touch "$partial/.dgaas-ready"
    mv "$partial" "$ROOT"
    log "chroot ready in $((SECONDS - t0)) s"
}

install_host_minicondor() {
    command -v condor_master > /dev/null && [ -d /etc/condor/config.d ] && return
    log "installing minicondor from the host's packages"
    apt_install_host minicondor
    # The package may start a system-wide (root) pool on 9618; this pool replaces it.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now condor > /dev/null 2>&1 || true
    else
        invoke-rc.d condor stop > /dev/null 2>&1 || service condor stop > /dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------- configuration
pool_config() { # the pool's own settings, read after minicondor's config.d
    cat << EOF
# Generated by tests/clusters/htcondor/start.sh; rewritten on every start.
# Personal pool run unprivileged as $POOL_USER (uid $POOL_UID in a user namespace).
LOCAL_DIR = $POOL
LOG = \$(LOCAL_DIR)/log
SPOOL = \$(LOCAL_DIR)/spool
EXECUTE = \$(LOCAL_DIR)/execute
RUN = \$(LOCAL_DIR)/run
LOCK = \$(LOCAL_DIR)/lock
CRED_STORE_DIR = \$(LOCAL_DIR)/cred_dir
SEC_PASSWORD_DIRECTORY = \$(LOCAL_DIR)/passwords.d
SEC_TOKEN_SYSTEM_DIRECTORY = \$(LOCAL_DIR)/tokens.d
SEC_TOKEN_DIRECTORY = \$(LOCAL_DIR)/tokens.d

# Network: loopback only, everything through the shared port 9618.
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = 127.0.0.1:9618
NETWORK_INTERFACE = 127.0.0.1
BIND_ALL_INTERFACES = False
ENABLE_IPV6 = False
USE_SHARED_PORT = True
SHARED_PORT_PORT = 9618

# Identity and security (minicondor's recommended_v9_0 plus the pool user).
UID_DOMAIN = $DOMAIN
TRUST_DOMAIN = $DOMAIN
FILESYSTEM_DOMAIN = $DOMAIN
ALLOW_DAEMON = $POOL_USER@\$(UID_DOMAIN) condor@\$(UID_DOMAIN)
ALLOW_NEGOTIATOR = $POOL_USER@\$(UID_DOMAIN) condor@\$(UID_DOMAIN)
ALLOW_ADMINISTRATOR = $POOL_USER@\$(UID_DOMAIN) root@\$(UID_DOMAIN) condor@\$(UID_DOMAIN)
CONDOR_Q_ONLY_MY_JOBS = False

# No obituary mails (there is no mailer).
MAIL = /bin/true

# No core dumps in the log directory (a starter orphaned by a killed master dumps one).
CREATE_CORE_FILES = False

# No cgroups (unprivileged, no systemd).
BASE_CGROUP =
CGROUP_MEMORY_LIMIT_POLICY = none

# Fast cycles: submit to completion in about a second.
NEGOTIATOR_INTERVAL = 1
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
SCHEDD_INTERVAL = 2
SCHEDD_MIN_INTERVAL = 1
UPDATE_INTERVAL = 2
STARTER_UPDATE_INTERVAL = 2
SHADOW_QUEUE_UPDATE_INTERVAL = 2

# One partitionable slot with 8 CPUs (more than the host has, so several jobs run at once).
NUM_CPUS = 8
use FEATURE : PartitionableSlot
START = True
SUSPEND = False
PREEMPT = False
KILL = False

# Two simulated NVIDIA A100 GPUs (condor_gpu_discovery -simulate): request_GPUs = 1
# jobs match and get CUDA_VISIBLE_DEVICES / _CONDOR_AssignedGPUs. No real GPU involved.
use FEATURE : GPUs
GPU_DISCOVERY_EXTRA = -simulate:4,2
EOF
}

host_config() { # for host-side clients (htcondor2 bindings); IDTOKENS only
    cat << EOF
# Generated by tests/clusters/htcondor/start.sh: CONDOR_CONFIG for host-side clients
# (PyPI htcondor / htcondor2) of the pool in $DIR.
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = 127.0.0.1:9618
NETWORK_INTERFACE = 127.0.0.1
ENABLE_IPV6 = False
UID_DOMAIN = $DOMAIN
TRUST_DOMAIN = $DOMAIN
SCHEDD_NAME = $1
SEC_TOKEN_DIRECTORY = $TOKENS
SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS
EOF
}

write_if_changed() { # write_if_changed FILE (content on stdin); status 0 if it changed
    local new
    new=$(cat)
    if [ -f "$1" ] && [ "$(cat "$1")" = "$new" ]; then return 1; fi
    printf '%s\n' "$new" > "$1.new" && mv "$1.new" "$1"
}

# tool_paths TOOL...: "TOOL PATH" per line, PATH being where the pool finds its own TOOL: inside
# the chroot in chroot mode (resolved by the chroot's own shell, so its symlinks count), else on
# the host. Debian has the admin tools (condor_master, condor_off, condor_reconfig) in sbin and
# the others in bin. Fails, naming the tool, when one is missing.
tool_paths() {
    local -a run=()
    [ -z "$NEWROOT" ] || run=(chroot "$NEWROOT")
    # shellcheck disable=SC2016  # expanded by the inner shell
    "${run[@]}" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c '
        for t; do
            p=$(command -v "$t") && [ "${p#/}" != "$p" ] || { echo "htcondor: $t not found" >&2; exit 1; }
            echo "$t $p"
        done' sh "$@"
}

# The host-side wrappers in $BIN: one per tool of WRAPPED_TOOLS (any other file there is removed),
# each running the tool where tool_paths found it. Written only once the pool's tools are
# installed: before that, there is nothing to resolve them in.
write_wrappers() {
    local tool path paths f
    # shellcheck disable=SC2086  # a list of names
    paths=$(tool_paths $WRAPPED_TOOLS) \
        || die "the pool's tools are incomplete${NEWROOT:+ in the chroot $NEWROOT}; run stop.sh --purge, then start.sh"
    mkdir -p "$BIN"
    for f in "$BIN"/*; do
        [ -e "$f" ] || continue
        case " $WRAPPED_TOOLS " in *" ${f##*/} "*) ;; *) rm -f "$f" ;; esac
    done
    while read -r tool path; do
        write_if_changed "$BIN/$tool" << EOF || true
#!/bin/bash
# Generated by tests/clusters/htcondor/start.sh: the pool's $tool, run as the pool user
# ($POOL_USER, uid $POOL_UID in a user namespace)${NEWROOT:+ inside the chroot $NEWROOT}.
# Host paths in arguments must be visible there (bound: see $BINDS_FILE).
root=$(printf %q "$NEWROOT") # the chroot ('' in host mode)
tool=$(printf %q "$path") # where start.sh found $tool (in \$root)
unset CONDOR_CONFIG
wd=\$PWD
[ -d "\$root\$wd" ] || wd=/
exec env CONDOR_CONFIG=$(printf %q "$CONFIG") unshare --user --map-user=$POOL_UID --map-group=$POOL_GID \${root:+--root="\$root" --wd="\$wd"} "\$tool" "\$@"
EOF
        chmod 755 "$BIN/$tool"
    done <<< "$paths"
}

write_env_sh() {
    write_if_changed "$DIR/env.sh" << EOF || true
# Generated by tests/clusters/htcondor/start.sh; source it to use the pool from the host.
case ":\$PATH:" in *":$BIN:"*) ;; *) export PATH="$BIN:\$PATH" ;; esac
export CONDOR_CONFIG="$HOST_CONFIG"
export DGAAS_HTCONDOR_DIR="$DIR"
EOF
}

# ---------------------------------------------------------------- health
q() { in_pool 15 "$@" 2> /dev/null; }

schedd_ok() { q condor_q -totals > /dev/null; }
startd_names() { q condor_status -af Machine | sort -u; } # hosts with a slot in the collector
pool_healthy() {
    master_pid > /dev/null || return 1
    if [ -n "$NEWROOT" ]; then
        [ -f "$BINDS_FILE" ] && [ "$(cat "$BINDS_FILE")" = "$BINDS" ] || return 1
        mountpoint -q "$NEWROOT/proc" && mountpoint -q "$NEWROOT/dev" || return 1
        local p
        while read -r p; do mountpoint -q "$NEWROOT$p" || return 1; done <<< "$POOL
$BINDS"
    fi
    [ -f "$TOKENS/$POOL_USER" ] && [ -f "$HOST_CONFIG" ] || return 1
    schedd_ok && [ -n "$(startd_names)" ]
}

report() {
    local version nstartd ngpus
    # shellcheck disable=SC2016
    version=$(q condor_version | sed -n 's/^\$CondorVersion: \([^ ]*\) .*/\1/p')
    nstartd=$(startd_names | wc -l)
    ngpus=$(q condor_status -constraint 'PartitionableSlot =?= True' -af TotalSlotGPUs \
        | awk '{ s += $1 } END { print s + 0 }')
    echo "htcondor: up (${version:-?}), $nstartd startd, $ngpus gpus; source $DIR/env.sh"
}

fail_with_log() { # fail_with_log MESSAGE DAEMONLOG...
    local msg=$1 f
    shift
    for f in "$@" MasterLog; do
        [ -f "$POOL/log/$f" ] || continue
        echo "---- tail of $POOL/log/$f" >&2
        tail -25 "$POOL/log/$f" >&2
    done
    [ -s "$POOL/log/master.out" ] && { echo "---- $POOL/log/master.out" >&2; tail -10 "$POOL/log/master.out" >&2; }
    die "$msg"
}

# ---------------------------------------------------------------- main
BINDS=""
[ "$MODE" = host ] || BINDS=$(desired_binds)
mkdir -p "$POOL/etc/config.d"

# A changed config (start.sh edited) or changed binds mean a restart; rewrite first.
config_changed=0
write_if_changed "$CONFIG" << EOF && config_changed=1
# Generated by tests/clusters/htcondor/start.sh: the pool's CONDOR_CONFIG.
include : /etc/condor/condor_config
LOCAL_CONFIG_FILE =
LOCAL_CONFIG_DIR = /usr/share/condor/config.d,/etc/condor/config.d,$POOL/etc/config.d
EOF
pool_config | write_if_changed "$POOL/etc/config.d/50-dgaas.conf" && config_changed=1

if [ "$config_changed" = 0 ] && pool_healthy; then
    write_wrappers # (start.sh may have changed them)
    write_env_sh
    report
    exit 0
fi

t0=$SECONDS
if master_pid > /dev/null || [ -n "$(pool_pids)" ] || { [ -n "$NEWROOT" ] && [ -n "$(mounts_under "$NEWROOT")" ]; }; then
    log "pool not healthy, changed config or binds: restarting"
    pool_stop
fi

if [ "$MODE" = chroot ]; then build_chroot; else install_host_minicondor; fi
# Only now are the pool's tools in place (a first start has just built the chroot), so only now
# can the wrappers find where each tool really is.
write_wrappers
write_env_sh
master=$(tool_paths condor_master) || die "condor_master is missing${NEWROOT:+ in the chroot $NEWROOT}"
master=${master#* }

for d in log spool execute run lock cred_dir passwords.d tokens.d; do mkdir -p "$POOL/$d"; done
chmod 700 "$POOL/passwords.d" "$POOL/tokens.d" "$POOL/cred_dir"
mkdir -p "$TOKENS" && chmod 700 "$TOKENS"

if [ -n "$NEWROOT" ]; then
    cp /etc/hosts "$NEWROOT/etc/hosts" # same host name resolution inside and out
    mountpoint -q "$NEWROOT/proc" || mount -t proc proc "$NEWROOT/proc"
    if ! mountpoint -q "$NEWROOT/dev"; then
        mount --rbind /dev "$NEWROOT/dev"
        mount --make-rslave "$NEWROOT/dev"
    fi
    while read -r p; do
        [ -n "$p" ] || continue
        mkdir -p "$NEWROOT$p"
        if ! mountpoint -q "$NEWROOT$p"; then
            mount --rbind "$p" "$NEWROOT$p"
            mount --make-rslave "$NEWROOT$p"
        fi
    done <<< "$POOL
$BINDS"
    printf '%s\n' "$BINDS" > "$BINDS_FILE"
fi

# Nothing of ours runs now: a listener on 9618 is someone else's (e.g. a system condor).
if (exec 3<> /dev/tcp/127.0.0.1/9618) 2> /dev/null; then
    die "127.0.0.1:9618 is already in use by another process: $(ss -ltnp 'sport = :9618' 2> /dev/null | tail -n +2 | tr -s ' ')"
fi

# condor_master in the foreground of its own session; unshare execs it, so $! is its pid.
(
    cd /
    exec 9>&- # do not hand the lock to the daemons
    exec setsid env -u CONDOR_CONFIG CONDOR_CONFIG="$CONFIG" unshare --user \
        "--map-user=$POOL_UID" "--map-group=$POOL_GID" ${NEWROOT:+"--root=$NEWROOT" --wd=/} \
        "$master" -f < /dev/null >> "$POOL/log/master.out" 2>&1
) &
echo $! > "$PIDFILE"
disown || true

deadline=$((SECONDS + 90))
until schedd_ok; do
    master_pid > /dev/null || fail_with_log "condor_master exited during start-up"
    [ $SECONDS -lt $deadline ] || fail_with_log "the schedd did not answer within 90 s" SchedLog CollectorLog
    sleep 0.5
done
until [ -n "$(startd_names)" ]; do
    master_pid > /dev/null || fail_with_log "condor_master exited during start-up"
    [ $SECONDS -lt $deadline ] || fail_with_log "no startd in the collector within 90 s" StartLog CollectorLog
    sleep 0.5
done

# IDTOKEN for host-side clients, and their config (with the schedd's real name).
if ! q condor_token_create -identity "$POOL_USER@$DOMAIN" > "$TOKENS/$POOL_USER.new" \
    || ! [ -s "$TOKENS/$POOL_USER.new" ]; then
    fail_with_log "condor_token_create failed"
fi
chmod 600 "$TOKENS/$POOL_USER.new" && mv "$TOKENS/$POOL_USER.new" "$TOKENS/$POOL_USER"
schedd_name=$(q condor_status -schedd -af Name | sed -n 1p)
[ -n "$schedd_name" ] || fail_with_log "the schedd is not in the collector" SchedLog
host_config "$schedd_name" | write_if_changed "$HOST_CONFIG" || true

log "started in $((SECONDS - t0)) s"
report
