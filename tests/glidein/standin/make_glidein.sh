#!/bin/bash
# STAND-IN, for tests only: lays out a glidein work directory the way glideinWMS/glideinwms
# creation/web_base/glidein_startup.sh does before it runs custom scripts (read at commit efdc530a5),
# so that providers/glideinwms/*.sh can be run here exactly as a glidein runs them.
#
#   make_glidein.sh WORK_DIR ENTRY_NAME [KEY=VALUE]...
#
# What it creates, and where glidein_startup.sh does the same:
#   WORK_DIR/glidein_config        "# --- glidein_startup vals ---" block (GLIDEIN_WORK_DIR=WORK_DIR/main,
#                                  GLIDEIN_ENTRY_WORK_DIR, TMP_DIR, GLIDEIN_LOCAL_TMP_DIR, GLIDEIN_STARTUP_PID,
#                                  ADD_CONFIG_LINE_SOURCE=WORK_DIR/add_config_line.source, ...), then
#                                  "# --- User Parameters ---" and the KEY=VALUE pairs as "KEY VALUE"
#                                  lines (params2file: factory/frontend attributes), then the lines the
#                                  first system files add: CONDOR_VARS_FILE (fetch_file_base config_out
#                                  of condor_vars.lst, cgWDictFile.py) and ERROR_GEN_PATH (setup_script.sh)
#   WORK_DIR/main, entry_ENTRY, tmp, condor_config.d, and .gwms.d/{bin,lib,exec/{setup,prejob,postjob,
#                                  cleanup,setup_singularity}} (GWMS_DIR; exec/cleanup is what
#                                  glidein_exit runs through gwms_process_scripts, glidein_paths.source)
#   WORK_DIR/add_config_line.source, WORK_DIR/main/error_gen.sh   copied from $GWMS_HELPERS_DIR
#                                  (default: this stand-in folder; point it at a glideinwms checkout's
#                                  creation/web_base to run with the real helpers)
#   WORK_DIR/main/condor_vars.lst  header and a few lines in the format of creation/web_base/condor_vars.lst
set -euo pipefail

work_dir=$(mkdir -p "$1" && cd "$1" && pwd -P)
entry=$2
shift 2
helpers=${GWMS_HELPERS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)}

mkdir -p "$work_dir"/{main,"entry_$entry",tmp,condor_config.d}
for sub in setup prejob postjob cleanup setup_singularity; do
    mkdir -p "$work_dir/.gwms.d/exec/$sub"
done
mkdir -p "$work_dir/.gwms.d/bin" "$work_dir/.gwms.d/lib"
# GLIDEIN_LOCAL_TMP_DIR: /tmp/glide_* in a real glidein; here beside WORK_DIR, so that it goes with it
local_tmp=$(mktemp -d "$(dirname "$work_dir")/glide_local_XXXXXX")

cp "$helpers/add_config_line.source" "$work_dir/add_config_line.source"
cp "$helpers/error_gen.sh" "$work_dir/main/error_gen.sh"
chmod u+x "$work_dir/main/error_gen.sh"

cat > "$work_dir/main/condor_vars.lst" <<'EOF'
# VarName   Type      Default         CondorName   Req.  ExportCondor    UserJobEnvName
#           S=Quote   - = No Default  + = VarName                        - = Do not export
#                                                                        + = Use VarName
#                                                                        @ = Use CondorName
#################################################################################################################
GLIDEIN_Factory             S   -               +   Y   Y   @
GLIDEIN_Name                S   -               +   Y   Y   @
GLIDEIN_REQUIRED_OS         S   any             +   N   Y   -
EOF

config="$work_dir/glidein_config"
{
    echo
    echo "# --- glidein_startup vals ---"
    echo "GLIDEIN_UUID $(cat /proc/sys/kernel/random/uuid)"
    echo "GLIDEIN_Factory standin-factory"
    echo "GLIDEIN_Name standin_glidein"
    echo "GLIDEIN_Entry_Name $entry"
    echo "GLIDEIN_CredentialIdentifier standin"
    echo "CONDORG_CLUSTER 1"
    echo "CONDORG_SUBCLUSTER 0"
    echo "CONDORG_SCHEDD standin-schedd"
    echo "DEBUG_MODE 0"
    echo "GLIDEIN_STARTUP_PID $PPID"
    echo "GLIDEIN_START_DIR_ORIG $work_dir"
    echo "GLIDEIN_WORKSPACE_ORIG $work_dir"
    echo "GLIDEIN_WORK_DIR $work_dir/main"
    echo "GLIDEIN_ENTRY_WORK_DIR $work_dir/entry_$entry"
    echo "TMP_DIR $work_dir/tmp"
    echo "GLIDEIN_LOCAL_TMP_DIR $local_tmp"
    echo "PROXY_URL None"
    echo "DESCRIPTION_FILE description.standin.cfg"
    echo "DESCRIPTION_ENTRY_FILE description.standin.cfg"
    echo "GLIDEIN_Signature standin"
    echo "GLIDEIN_Entry_Signature standin"
    echo "ADD_CONFIG_LINE_SOURCE $work_dir/add_config_line.source"
    echo "WRAPPER_LIST $work_dir/wrapper_list.lst"
    echo "SLOTS_LAYOUT fixed"
    echo "GLIDEIN_INITIALIZED 0"
    echo "GLIDEIN_ADVERTISE_ONLY 0"
    echo "GLIDEIN_CONDOR_TOKEN "
    echo "# --- User Parameters ---"
    for pair in "$@"; do
        echo "${pair%%=*} ${pair#*=}"
    done
    echo "CONDOR_VARS_FILE $work_dir/main/condor_vars.lst"
    echo "ERROR_GEN_PATH $work_dir/main/error_gen.sh"
} > "$config"
touch "$work_dir/wrapper_list.lst"
echo "$config"
