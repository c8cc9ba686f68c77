#!/bin/bash
# triton_setup.sh: GlideinWMS custom script (setup phase) that starts ONE Triton Inference Server on the
# glidein's node through dgaas-flow's pilot, so that every job of this glidein can use it, and publishes
# where it answers (TRITON_ADDRESS...) into glidein_config, the machine ad and the jobs' environment.
# providers/glideinwms/README.md tells a site operator how to turn it on.
#
# Protocol, as in glideinWMS/glideinwms (read at commit efdc530a5; paths under creation/web_base/):
#  - glidein_startup.sh fetch_file_base runs every executable of the file lists, in order, as
#        cd <glidein work dir>; "<dir>/triton_setup.sh" glidein_config <main|entry name> < /dev/null
#    exit 0 = validated; non-zero stops the glidein (no job runs); the report in ./otrb_output.xml,
#    written by ERROR_GEN_PATH (error_gen.sh -ok|-error), must agree with the exit status
#    (doc/factory/custom_scripts.html).
#  - helpers: source ADD_CONFIG_LINE_SOURCE (add_config_line.source): gconfig_get, gconfig_get_bool,
#    gconfig_add; add_condor_vars_line writes the file in the global condor_vars_file (CONDOR_VARS_FILE).
#    condor_startup.sh set_var turns each "NAME TYPE DEFAULT CONDORNAME REQ PUBLISH JOBENV" line into
#    NAME=value in the startd config, PUBLISH=Y adds it to GLIDEIN_VARIABLES (machine ad), JOBENV=+
#    adds NAME=value to STARTER_JOB_ENVIRONMENT (every job's environment).
#  - cleanup: glidein_exit runs gwms_process_scripts "$GWMS_DIR" cleanup glidein_config, i.e. every
#    executable in <work dir>/.gwms.d/exec/cleanup (GWMS_SUBDIR=".gwms.d" in glidein_startup.sh,
#    GWMS_SUBDIR_EXEC_CLEANUP="exec/cleanup" in glidein_paths.source), before the work dir is removed.
#    This script copies triton_cleanup.sh there (the way glidein_startup.sh itself places
#    setup_prejob.sh in exec/prejob); a factory may instead set GLIDEIN_CLEANUP_SCRIPT=triton_cleanup.sh.
#
# Attributes read (factory/frontend <attr>s, all optional but the repository):
#   GLIDEIN_USE_TRITON      the switch (True/T/Yes/Y/1/positive number); anything else: do nothing
#   TRITON_MODEL_REPOSITORY Triton model repository on the node (e.g. on CVMFS)          [required]
#   TRITON_MODELS           comma list of models to load; empty: every model in the repository
#   TRITON_LAUNCH           apptainer (default) | binary | docker
#   TRITON_IMAGE            server image for apptainer/docker (default below: CVMFS, no pull)
#   TRITON_BINARY           tritonserver for launch=binary (default: the pilot's own choice)
#   TRITON_REQUIRE_GPU      default True: fail the glidein on a node without GPU
#   TRITON_LISTEN           address the server binds, default 127.0.0.1 (jobs of this glidein only)
#   TRITON_READY_TIMEOUT    seconds to wait for /v2/health/ready, default 120
#   DGAAS_FLOW_PYTHON       a python with dgaas-flow installed (CVMFS, shared FS), default python3
#   TRITON_STATE_DIR        pilot state (endpoint file, logs), default <glidein work dir>/triton
#   GWMS_SINGULARITY_PATH   (set by singularity_setup.sh) the apptainer to use, else PATH
#   GLIDEIN_STARTUP_PID     (set by glidein_startup.sh) passed to the pilot when it can watch a pid
# Published (glidein_config, machine ad, job environment): TRITON_ADDRESS (host:port, HTTP),
#   TRITON_GRPC_ADDRESS, TRITON_METRICS_ADDRESS, TRITON_MODELS, TRITON_GPUS (when any),
#   TRITON_GPU_COUNT, TRITON_READY (=True); glidein_config only: TRITON_STATE_DIR, TRITON_PILOT_PYTHON,
#   TRITON_ENDPOINT_FILE (read by triton_health.sh and triton_cleanup.sh).

# The default image: images come from CVMFS on the grid (nothing to pull, shared by every glidein).
# This unpacked Triton image is the one CMS SONIC's cmsTriton starts by default; set TRITON_IMAGE to
# your own (e.g. an NGC tritonserver unpacked on CVMFS, or docker://nvcr.io/nvidia/tritonserver:24.09-py3,
# which every glidein would then pull).
DEFAULT_IMAGE=/cvmfs/unpacked.cern.ch/registry.hub.docker.com/fastml/triton-torchgeo:22.07-py3-geometric
PILOT_DEFAULT_READY_TIMEOUT=120  # the same default as dgaas_flow.specs.TritonSettings.ready_timeout_s

glidein_config=$1
entry_id=${2:-main}
script_name=$(basename "$0")

# ----------------------------------------------------------------------------------- helpers

add_config_line_source=$(grep -m1 '^ADD_CONFIG_LINE_SOURCE ' "$glidein_config" 2>/dev/null | cut -d ' ' -f 2-)
error_gen=$(grep '^ERROR_GEN_PATH ' "$glidein_config" 2>/dev/null | tail -n 1 | cut -d ' ' -f 2-)
if [[ -z "$add_config_line_source" || ! -r "$add_config_line_source" ]]; then
    echo "$script_name: cannot load ADD_CONFIG_LINE_SOURCE from '$glidein_config'" >&2
    [[ -x "$error_gen" ]] && "$error_gen" -error "$script_name" Corruption \
        "ADD_CONFIG_LINE_SOURCE missing or unreadable in $glidein_config" file "$glidein_config"
    exit 1
fi
# shellcheck source-path=SCRIPTDIR source=../../../tests/glidein/standin/add_config_line.source
. "$add_config_line_source"
error_gen=$(gconfig_get ERROR_GEN_PATH "$glidein_config")
condor_vars_file=$(gconfig_get CONDOR_VARS_FILE "$glidein_config" "-i")

# fail TYPE "DETAIL" [METRIC VALUE]...: report, make sure no pilot is left, exit 1
fail() {
    local type=$1 detail=$2
    shift 2
    echo "$script_name: error ($type): $detail" >&2
    stop_pilot
    "$error_gen" -error "$script_name" "$type" "$detail" "$@"
    exit 1
}

# get_bool KEY DEFAULT: the value as true (0) or false (1); DEFAULT (true|false) when unset or empty
get_bool() {
    local raw
    raw=$(gconfig_get "$1" "$glidein_config" | tr -d ' \t\r')
    [[ -n "$raw" ]] || { [[ "$2" == true ]]; return; }
    if declare -F gconfig_get_bool > /dev/null; then
        gconfig_get_bool "$1" "$glidein_config"
        return
    fi
    # older add_config_line.source without gconfig_get_bool: the same rule
    raw=${raw^^}
    [[ "$raw" =~ ^(TRUE|T|YES|Y|1)$ ]] || { [[ "$raw" =~ ^[0-9]+$ ]] && ((10#$raw > 0)); }
}

# missing_path_type PATH: a path on CVMFS that is not there means the node lacks it (WN_Resource);
# any other missing path is a wrong attribute (Config)
missing_path_type() {
    [[ "$1" == /cvmfs/* ]] && echo WN_Resource || echo Config
}

state_dir=""
py=""
stop_pilot() {
    # the pilot CLI leaves nothing behind when `start` fails; stop anyway, whatever happened before
    [[ -n "$state_dir" && -n "$py" && -d "$state_dir" ]] || return 0
    "$py" -m dgaas_flow pilot stop --dir "$state_dir" > /dev/null 2>&1
}

# publish NAME TYPE VALUE: glidein_config + machine ad (PUBLISH=Y) + job environment (JOBENV=+)
publish() {
    gconfig_add "$1" "$3"
    add_condor_vars_line "$1" "$2" "-" "+" "N" "Y" "+" || fail Corruption "cannot write the condor vars file $condor_vars_file"
}

# ----------------------------------------------------------------------------------- the switch

if ! get_bool GLIDEIN_USE_TRITON false; then
    echo "$script_name: GLIDEIN_USE_TRITON is not true ('$(gconfig_get GLIDEIN_USE_TRITON "$glidein_config")'): no Triton server on this glidein"
    "$error_gen" -ok "$script_name" TRITON_USE False
    exit 0
fi

[[ -n "$condor_vars_file" && -w "$condor_vars_file" ]] || fail Corruption "CONDOR_VARS_FILE missing or not writable in $glidein_config"

# ----------------------------------------------------------------------------------- attributes

repo=$(gconfig_get TRITON_MODEL_REPOSITORY "$glidein_config")
[[ -n "$repo" ]] || fail Config "GLIDEIN_USE_TRITON is on but TRITON_MODEL_REPOSITORY is not set" MissingAttribute TRITON_MODEL_REPOSITORY
[[ -d "$repo" ]] || fail "$(missing_path_type "$repo")" "TRITON_MODEL_REPOSITORY $repo is not a folder on $(hostname)" TRITON_MODEL_REPOSITORY "$repo"

models=()
IFS=',' read -r -a raw_models <<< "$(gconfig_get TRITON_MODELS "$glidein_config")"
for m in "${raw_models[@]}"; do
    m=$(echo "$m" | tr -d ' \t\r')
    [[ -n "$m" ]] && models+=("$m")
done

launch=$(gconfig_get TRITON_LAUNCH "$glidein_config" | tr -d ' \t\r' | tr '[:upper:]' '[:lower:]')
launch=${launch:-apptainer}
[[ "$launch" =~ ^(apptainer|binary|docker)$ ]] || fail Config "TRITON_LAUNCH is '$launch'; expected apptainer, binary or docker" TRITON_LAUNCH "$launch"

image=$(gconfig_get TRITON_IMAGE "$glidein_config")
image=${image:-$DEFAULT_IMAGE}
binary=$(gconfig_get TRITON_BINARY "$glidein_config")

listen=$(gconfig_get TRITON_LISTEN "$glidein_config" | tr -d ' \t\r')
listen=${listen:-127.0.0.1}

ready_timeout=$(gconfig_get TRITON_READY_TIMEOUT "$glidein_config" | tr -d ' \t\r')
ready_timeout=${ready_timeout:-$PILOT_DEFAULT_READY_TIMEOUT}
[[ "$ready_timeout" =~ ^[0-9]+([.][0-9]+)?$ && ! "$ready_timeout" =~ ^0+([.]0+)?$ ]] ||
    fail Config "TRITON_READY_TIMEOUT is '$ready_timeout'; expected a positive number of seconds" TRITON_READY_TIMEOUT "$ready_timeout"

py_attr=$(gconfig_get DGAAS_FLOW_PYTHON "$glidein_config")
py_cmd=${py_attr:-python3}
if ! py=$(command -v "$py_cmd"); then
    py=""
    [[ -n "$py_attr" ]] && type=$(missing_path_type "$py_attr") || type=WN_Resource
    fail "$type" "DGAAS_FLOW_PYTHON: no python '$py_cmd' on $(hostname)" DGAAS_FLOW_PYTHON "$py_cmd"
fi
if ! import_error=$("$py" -c 'import dgaas_flow' 2>&1); then
    py_failed=$py
    py=""
    fail WN_Resource "DGAAS_FLOW_PYTHON: $py_failed cannot import dgaas_flow: ${import_error##*$'\n'}" DGAAS_FLOW_PYTHON "$py_failed"
fi

# the glidein work dir holds glidein_config (glidein_startup.sh: glidein_config="${PWD}/glidein_config")
work_dir=$(cd "$(dirname "$glidein_config")" && pwd -P)
state_dir=$(gconfig_get TRITON_STATE_DIR "$glidein_config")
state_dir=${state_dir:-$work_dir/triton}
mkdir -p "$state_dir" || fail WN_Resource "cannot create the pilot state folder $state_dir"
# the pilot keeps its backend links in a cache: keep it inside the glidein (removed with it)
export DGAAS_CACHE_DIR=${DGAAS_CACHE_DIR:-$state_dir/cache}

# ----------------------------------------------------------------------------------- GPUs

# Setup scripts run before condor_startup.sh's condor_gpu_discovery: look for GPUs here.
# CUDA_VISIBLE_DEVICES, when the batch system set it (even empty, -1 or HTCondor's NoDevFiles: then
# it gave us none), else every GPU nvidia-smi lists.
gpus=""
if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    gpu_source="CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES'"
    case "$CUDA_VISIBLE_DEVICES" in
        "" | -1 | NoDevFiles) ;;
        *) gpus=$(echo "$CUDA_VISIBLE_DEVICES" | tr -d ' ') ;;
    esac
elif command -v nvidia-smi > /dev/null 2>&1; then
    if smi_out=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>&1); then
        gpus=$(echo "$smi_out" | tr -d ' \r' | grep -E '^[0-9]+$' | paste -sd, -)
        gpu_source="nvidia-smi"
    else
        gpu_source="nvidia-smi failed: ${smi_out//$'\n'/ }"
    fi
else
    gpu_source="CUDA_VISIBLE_DEVICES unset and no nvidia-smi on PATH"
fi
if [[ -n "$gpus" ]]; then
    export CUDA_VISIBLE_DEVICES=$gpus  # the pilot gives the server the GPUs in CUDA_VISIBLE_DEVICES
    gpu_count=$(echo "$gpus" | tr ',' '\n' | grep -c .)
else
    gpu_count=0
    # the pilot would otherwise take these batch-system variables as GPUs given to it
    unset SLURM_JOB_GPUS _CONDOR_AssignedGPUs
    if get_bool TRITON_REQUIRE_GPU true; then
        py=""  # nothing started yet
        fail WN_Resource "no GPU on $(hostname) ($gpu_source) and TRITON_REQUIRE_GPU is true" GPUs 0
    fi
    echo "$script_name: no GPU ($gpu_source); TRITON_REQUIRE_GPU is false: the server runs on CPU"
fi

# ----------------------------------------------------------------------------------- container tool

if [[ "$launch" == apptainer ]]; then
    # singularity_setup.sh (main at_file_list, before the frontend's and after_entry scripts) publishes
    # the binary it validated; else Apptainer, or Singularity (same CLI), on PATH
    apptainer=$(gconfig_get GWMS_SINGULARITY_PATH "$glidein_config")
    [[ -n "$apptainer" && -x "$apptainer" ]] || apptainer=$(command -v apptainer || command -v singularity)
    [[ -n "$apptainer" ]] || fail WN_Resource "TRITON_LAUNCH is apptainer but $(hostname) has no Apptainer (GWMS_SINGULARITY_PATH unset, none on PATH)" TRITON_LAUNCH apptainer
    if [[ "$(command -v apptainer)" != "$apptainer" ]]; then
        # the pilot runs `apptainer`: put this one first on its PATH under that name
        mkdir -p "$state_dir/bin" && ln -sfn "$apptainer" "$state_dir/bin/apptainer"
        export PATH="$state_dir/bin:$PATH"
    fi
elif [[ "$launch" == docker ]]; then
    command -v docker > /dev/null || fail WN_Resource "TRITON_LAUNCH is docker but $(hostname) has no docker" TRITON_LAUNCH docker
elif [[ -n "$binary" && ! -x "$binary" ]] && ! command -v "$binary" > /dev/null; then
    fail "$(missing_path_type "$binary")" "TRITON_BINARY $binary is not an executable on $(hostname)" TRITON_BINARY "$binary"
fi

# ----------------------------------------------------------------------------------- cleanup hook

# What cleanup needs, recorded before anything starts (triton_cleanup.sh reads it)
gconfig_add TRITON_STATE_DIR "$state_dir"
gconfig_add TRITON_PILOT_PYTHON "$py"
cleanup_src="$(dirname "$0")/${script_name/setup/cleanup}"
cleanup_dir="$work_dir/.gwms.d/exec/cleanup"
if [[ -d "$cleanup_dir" && -r "$cleanup_src" ]]; then
    # "00_" sorts before cvmfs_umount.sh: the pilot's python may live on a CVMFS the glidein mounted
    if ! cp "$cleanup_src" "$cleanup_dir/00_triton_cleanup.sh" || ! chmod a+x "$cleanup_dir/00_triton_cleanup.sh"; then
        fail WN_Resource "cannot install the cleanup script in $cleanup_dir"
    fi
else
    echo "$script_name: warning: cleanup not registered ($cleanup_dir or $cleanup_src missing); set GLIDEIN_CLEANUP_SCRIPT=${script_name/setup/cleanup}" >&2
fi

# ----------------------------------------------------------------------------------- start the pilot

args=(-m dgaas_flow pilot start --dir "$state_dir" --launch "$launch" --listen "$listen")
[[ "$launch" != binary ]] && args+=(--image "$image")
[[ "$launch" == binary && -n "$binary" ]] && args+=(--binary "$binary")
source_args=(--model-repository "$repo")
for m in "${models[@]}"; do
    source_args+=(--model "$m")
done

args+=(--ready-timeout "$ready_timeout")
glidein_pid=$(gconfig_get GLIDEIN_STARTUP_PID "$glidein_config")
[[ -n "$glidein_pid" ]] && args+=(--watch-pid "$glidein_pid")

echo "$script_name: starting Triton ($launch, models: ${models[*]:-all}, GPUs: ${gpus:-none}) in $state_dir"
start_err="$state_dir/pilot-start.err"
start_out=$("$py" "${args[@]}" "${source_args[@]}" < /dev/null 2> "$start_err")
rc=$?
[[ -n "$start_out" ]] && echo "$start_out"
if [[ $rc -ne 0 ]]; then
    cat "$start_err" >&2
    reason=$(head -c 3000 "$start_err")  # `pilot start` quotes the pilot's own reason
    log_errors=$(grep -h -E '^(FATAL|ERROR|E[0-9]{4} |error:)' "$state_dir"/logs/*.log 2> /dev/null | tail -n 10)
    detail="dgaas-flow pilot start failed (exit $rc): $reason"
    [[ -n "$log_errors" && "$reason" != *"$log_errors"* ]] && detail+=$'\n'"server/container log: $log_errors"
    all="$(cat "$start_err")"$'\n'"$detail"
    if [[ $rc -eq 2 ]]; then
        type=Config  # the pilot refused its arguments (e.g. a model not in the repository)
    elif [[ "$all" == *"could not open image"* || "$all" == *FATAL:* ]]; then
        type=WN_Resource  # the container runtime cannot open or run the image on this node
        detail="TRITON_IMAGE $image cannot be run on $(hostname): $detail"
    elif [[ "$all" == *"not ready after"* ]]; then
        type=WN_Resource  # the server started but never answered /v2/health/ready
        detail="Triton did not become ready within TRITON_READY_TIMEOUT=${ready_timeout}s on $(hostname): $detail"
    else
        type=WN_Resource
    fi
    fail "$type" "$detail" TRITON_LAUNCH "$launch" TRITON_STATE_DIR "$state_dir"
fi

# ----------------------------------------------------------------------------------- publish

endpoint_file=$(echo "$start_out" | sed -n 's/^export DGAAS_ENDPOINT_FILE=//p' | tail -n 1)
[[ -r "$endpoint_file" ]] || fail Corruption "the pilot said it is ready but wrote no endpoint file: $start_out"
fields=$("$py" - "$endpoint_file" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))
for key in ("state", "http_url", "grpc_url", "metrics_url"):
    print(e.get(key) or "")
print(",".join(e.get("models") or []))
print(",".join(e.get("gpus") or []))
EOF
) || fail Corruption "cannot read the endpoint file $endpoint_file"
{ read -r state; read -r http_url; read -r grpc_url; read -r metrics_url; read -r ep_models; read -r ep_gpus; } <<< "$fields"
[[ "$state" == ready && -n "$http_url" ]] || fail Corruption "the endpoint file $endpoint_file says state '$state'"

hostport() {  # scheme://host:port/path -> host:port
    local rest=${1#*://}
    echo "${rest%%/*}"
}
if [[ -z "$ep_models" ]]; then
    # every model of the repository was loaded
    ep_models=$(find "$repo" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%f\n' | sort | paste -sd, -)
fi

publish TRITON_ADDRESS S "$(hostport "$http_url")"
publish TRITON_GRPC_ADDRESS S "$(hostport "$grpc_url")"
publish TRITON_METRICS_ADDRESS S "$(hostport "$metrics_url")"
publish TRITON_MODELS S "$ep_models"
[[ -n "$ep_gpus" ]] && publish TRITON_GPUS S "$ep_gpus"
publish TRITON_GPU_COUNT I "$gpu_count"
publish TRITON_READY C True
gconfig_add TRITON_ENDPOINT_FILE "$endpoint_file"

echo "$script_name: Triton ready at $(hostport "$http_url") (grpc $(hostport "$grpc_url")), models $ep_models, GPUs ${ep_gpus:-none}"
"$error_gen" -ok "$script_name" TRITON_ADDRESS "$(hostport "$http_url")" TRITON_MODELS "$ep_models" \
    TRITON_GPUS "${ep_gpus:-none}" TRITON_LAUNCH "$launch" entry "$entry_id"
exit 0
