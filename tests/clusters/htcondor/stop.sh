#!/usr/bin/env bash
# Stop the HTCondor personal pool started by start.sh: remove all jobs, stop
# condor_master and every daemon and job, unmount the binds, /proc and /dev it mounted.
# Idempotent; the chroot, config and spool stay on disk (the next start takes seconds).
# With --purge, also delete everything under $DGAAS_HTCONDOR_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

[ "$(id -u)" = 0 ] || die "stop.sh must run as root"
[ -d "$DIR" ] || { log "stopped (nothing in $DIR)"; exit 0; }
exec 9> "$DIR/.lock"
flock -w 600 9 || die "another start.sh/stop.sh holds $DIR/.lock"

t0=$SECONDS
pool_stop
for d in "$ROOT" "$DIR/root.partial"; do
    [ ! -d "$d" ] || [ -z "$(mounts_under "$d")" ] || unmount_under "$d"
done
if [ "${1:-}" = --purge ]; then
    for d in "$ROOT" "$DIR/root.partial"; do
        [ -z "$(mounts_under "$d")" ] || die "still mounted under $d; not purging"
    done
    rm -rf --one-file-system "$DIR"
    log "stopped and purged $DIR"
    exit 0
fi
log "stopped in $((SECONDS - t0)) s"
