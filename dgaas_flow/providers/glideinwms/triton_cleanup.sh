#!/bin/bash
# triton_cleanup.sh: stops the Triton pilot triton_setup.sh started, when the glidein ends.
#
# Protocol, as in glideinWMS/glideinwms (commit efdc530a5; creation/web_base/):
#  - glidein_startup.sh glidein_exit (every end: normal, validation failure, signal) first calls
#        gwms_process_scripts "$GWMS_DIR" cleanup "${glidein_config}"        (glidein_paths.source)
#    which runs every executable in <work dir>/.gwms.d/exec/cleanup, in lexicographic order, as
#        ./NAME /absolute/path/glidein_config          (cwd: that folder; one argument)
#    and only afterwards removes the work dir (glidien_cleanup).
#  - a file gets there in two ways: triton_setup.sh copies this script as 00_triton_cleanup.sh (before
#    cvmfs_umount.sh, since the pilot's python may be on a CVMFS the glidein mounted), or the factory
#    sets GLIDEIN_CLEANUP_SCRIPT=triton_cleanup.sh and fetch_file_base copies it there instead of
#    running it at setup. Running twice is harmless: the second run finds nothing to stop.
# Reads TRITON_STATE_DIR and TRITON_PILOT_PYTHON (written by triton_setup.sh). Exit 0 unless a pilot
# could not be stopped; reports with error_gen.sh like cvmfs_umount.sh, the other cleanup script.

glidein_config=$1
script_name=$(basename "$0")

add_config_line_source=$(grep -m1 '^ADD_CONFIG_LINE_SOURCE ' "$glidein_config" 2>/dev/null | cut -d ' ' -f 2-)
if [[ -z "$add_config_line_source" || ! -r "$add_config_line_source" ]]; then
    echo "$script_name: cannot load ADD_CONFIG_LINE_SOURCE from '$glidein_config'; nothing stopped" >&2
    exit 1
fi
# shellcheck source-path=SCRIPTDIR source=../../../tests/glidein/standin/add_config_line.source
. "$add_config_line_source"
error_gen=$(gconfig_get ERROR_GEN_PATH "$glidein_config")

state_dir=$(gconfig_get TRITON_STATE_DIR "$glidein_config")
py=$(gconfig_get TRITON_PILOT_PYTHON "$glidein_config")
if [[ -z "$state_dir" || ! -d "$state_dir" ]]; then
    echo "$script_name: no Triton pilot on this glidein"
    "$error_gen" -ok "$script_name" triton_cleanup "no Triton pilot on this glidein"
    exit 0
fi

if [[ -n "$py" ]] && "$py" -c 'import dgaas_flow' 2>/dev/null; then
    "$py" -m dgaas_flow pilot stop --dir "$state_dir"
    "$py" -m dgaas_flow pilot status --dir "$state_dir" > /dev/null 2>&1
    still_running=$?  # status exits 0 when a pilot is still running
    [[ $still_running -eq 0 ]] && left="a pilot is still running in $state_dir" || left=""
else
    # the python is gone (e.g. its CVMFS is unmounted): stop the supervisors named in the endpoint
    # files directly; each stops its server on SIGTERM (and the server dies with it: PDEATHSIG).
    # Only a pilot still starting or running, and only a pid that is still a dgaas-flow process
    # (over a long glidein a pid may have been reused by a user job).
    left=""
    for f in "$state_dir"/*.json; do
        [[ -e "$f" ]] || continue
        state=$(sed -n 's/.*"state": *"\([a-z]*\)".*/\1/p' "$f" | head -n 1)
        pid=$(sed -n 's/.*"supervisor_pid": *\([0-9][0-9]*\).*/\1/p' "$f" | head -n 1)
        if [[ -n "$pid" && "$state" != stopped && "$state" != failed ]] \
            && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q dgaas_flow; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 300); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null
                sleep 0.5
                kill -0 "$pid" 2>/dev/null && left="pilot supervisor $pid survived SIGKILL"
            fi
        fi
        # an Apptainer instance is a daemon of its own, named after the endpoint file
        command -v apptainer > /dev/null && apptainer instance stop "$(basename "$f" .json)" > /dev/null 2>&1
        rm -f "$f"
    done
fi

if [[ -n "$left" ]]; then
    "$error_gen" -error "$script_name" WN_Resource "$left" TRITON_STATE_DIR "$state_dir"
    exit 1
fi
echo "$script_name: Triton pilot stopped ($state_dir)"
"$error_gen" -ok "$script_name" TRITON_STATE_DIR "$state_dir"
exit 0
