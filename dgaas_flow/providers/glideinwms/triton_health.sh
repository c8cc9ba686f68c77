#!/bin/bash
# triton_health.sh: GlideinWMS periodic custom script (<file ... period="60">) that re-checks the Triton
# server triton_setup.sh started and publishes its health into the machine ad.
#
# Protocol, as in glideinWMS/glideinwms (commit efdc530a5; creation/web_base/, doc/factory/custom_scripts.html):
#  - first run: like every setup script, during the setup phase, in file-list order (so list it AFTER
#    triton_setup.sh): cd <work dir>; triton_health.sh glidein_config <id> < /dev/null; report with
#    error_gen.sh; non-zero stops the glidein. GLIDEIN_PERIODIC_SCRIPT is unset.
#  - then every `period` seconds: glidein_startup.sh add_periodic_script made it a startd cron job
#    (STARTD_CRON_GLIDEIN_PS_<n>_*) running script_wrapper.sh, which runs
#        triton_health.sh /absolute/glidein_config <id>
#    in a fresh temporary folder inside the work dir, with GLIDEIN_PERIODIC_SCRIPT=true. Its STDOUT is
#    merged by the startd into the machine ad, each attribute name prefixed by the <file>'s `prefix`
#    (default GLIDEIN_PS_; NOPREFIX: none); script_wrapper.sh then adds its own lines and "-".
#    A non-zero exit sets GLIDEIN_PS_OK = False for the whole glidein, so this script exits 0 whenever
#    it could check, and says "not ready" through the attributes instead.
#
# Prints (ClassAd "Name = value" lines; with the default prefix they become GLIDEIN_PS_TRITON_READY...):
#   TRITON_READY = True|False         a running pilot whose server answers /v2/health/ready with 200
#   TRITON_STATE = "ready"|"restarting"|"failed"|"stopped"|"starting"|"none"
#   TRITON_RESTARTS = n               server restarts by the pilot's supervisor
# Nothing when GLIDEIN_USE_TRITON is off.

glidein_config=$1  # $2, the entry id, is not needed
script_name=$(basename "$0")
periodic=${GLIDEIN_PERIODIC_SCRIPT:-}

add_config_line_source=$(grep -m1 '^ADD_CONFIG_LINE_SOURCE ' "$glidein_config" 2>/dev/null | cut -d ' ' -f 2-)
if [[ -z "$add_config_line_source" || ! -r "$add_config_line_source" ]]; then
    echo "$script_name: cannot load ADD_CONFIG_LINE_SOURCE from '$glidein_config'" >&2
    [[ -n "$periodic" ]] && echo "TRITON_READY = False"
    exit 1
fi
# shellcheck source-path=SCRIPTDIR source=../../../tests/glidein/standin/add_config_line.source
. "$add_config_line_source"
error_gen=$(gconfig_get ERROR_GEN_PATH "$glidein_config")

# report OK|ERROR [error type] "detail": error_gen at the first run only (periodic runs report through
# stdout); exit status 0, or 1 for an error at the first run
report() {
    if [[ -z "$periodic" ]]; then
        if [[ "$1" == OK ]]; then
            "$error_gen" -ok "$script_name" TRITON_READY "$ready" TRITON_STATE "$state" TRITON_RESTARTS "$restarts"
        else
            echo "$script_name: error ($2): $3" >&2
            "$error_gen" -error "$script_name" "$2" "$3" TRITON_READY "$ready" TRITON_STATE "$state"
            exit 1
        fi
    elif [[ "$1" != OK ]]; then
        echo "$script_name: $3" >&2
    fi
    exit 0
}

# the switch, read as triton_setup.sh reads it (gconfig_get_bool, or its rule in older helpers)
use_triton() {
    if declare -F gconfig_get_bool > /dev/null; then
        gconfig_get_bool GLIDEIN_USE_TRITON "$glidein_config"
        return
    fi
    local v
    v=$(gconfig_get GLIDEIN_USE_TRITON "$glidein_config" | tr -d ' \t\r')
    v=${v^^}
    [[ "$v" =~ ^(TRUE|T|YES|Y|1)$ ]] || { [[ "$v" =~ ^[0-9]+$ ]] && ((10#$v > 0)); }
}
if ! use_triton; then
    [[ -z "$periodic" ]] && "$error_gen" -ok "$script_name" TRITON_USE False
    exit 0
fi

ready=False
state=none
restarts=0
publish() {
    echo "TRITON_READY = $ready"
    echo "TRITON_STATE = \"$state\""
    echo "TRITON_RESTARTS = $restarts"
}

state_dir=$(gconfig_get TRITON_STATE_DIR "$glidein_config")
py=$(gconfig_get TRITON_PILOT_PYTHON "$glidein_config")
if [[ -z "$state_dir" || -z "$py" ]]; then
    publish
    report ERROR Config "GLIDEIN_USE_TRITON is on but triton_setup.sh has not run: list triton_health.sh after it"
fi

# `pilot status` prints the pilots of the state dir as JSON rows (running: true/false); the server
# itself must also answer /v2/health/ready, as the pilot's own readiness check does
check=$("$py" -m dgaas_flow pilot status --dir "$state_dir" 2>/dev/null | "$py" -c '
import json, sys, urllib.request
try:
    rows = json.load(sys.stdin)
except ValueError:
    rows = []
running = [r for r in rows if r.get("running")]
row = running[-1] if running else (rows[-1] if rows else {})
if running:
    state = row.get("state") or "none"
elif rows:  # no live supervisor: it stopped, or gave up ("failed")
    state = "failed" if row.get("state") == "failed" else "stopped"
else:
    state = "none"
ready = False
if running and state == "ready" and row.get("http_url"):
    try:
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a site proxy
        with no_proxy.open(row["http_url"] + "/v2/health/ready", timeout=5) as r:
            ready = r.status == 200
    except OSError:
        ready = False
print("True" if ready else "False", state, int(row.get("restarts") or 0))
' 2>/dev/null)
read -r ready state restarts <<< "$check"
ready=${ready:-False}
state=${state:-none}
restarts=${restarts:-0}
publish
if [[ "$ready" == True ]]; then
    report OK
fi
report ERROR WN_Resource "Triton is not ready (pilot state $state) in $state_dir"
