#!/bin/bash
# STAND-IN, for tests only: runs a custom script the three ways a glidein does, as read in
# glideinWMS/glideinwms creation/web_base (commit efdc530a5). Written for these tests; simplified where
# noted, never different in what a custom script sees (arguments, working directory, stdin, environment).
#
#   glidein_run.sh fetch WORK_DIR ID FILE TYPE    ID: main|entry, TYPE: regular|exec
#       glidein_startup.sh fetch_file_base: the file lands in the ID's work dir (GLIDEIN_WORK_DIR or
#       GLIDEIN_ENTRY_WORK_DIR) under its own name; an exec file named by GLIDEIN_CLEANUP_SCRIPT is copied
#       to .gwms.d/exec/cleanup instead of being run; any other exec file is run at once as
#           cd WORK_DIR; "$dir/FILE" glidein_config ID < /dev/null
#       and its exit status is returned (non-zero: the glidein stops with a validation error).
#       [simplified: no download, signature check or error_augment.sh bookkeeping]
#   glidein_run.sh periodic WORK_DIR FILE ID
#       script_wrapper.sh, as the startd cron runs it (STARTD_CRON_GLIDEIN_PS_n_CWD = WORK_DIR): a fresh
#       temporary directory inside WORK_DIR as cwd, GLIDEIN_PERIODIC_SCRIPT=true in the environment,
#           FILE /absolute/glidein_config ID
#       then the wrapper's own lines and "-". Stdout is what the startd merges into the machine ad
#       (adding the cron job's prefix, GLIDEIN_PS_ unless the file's prefix is NOPREFIX).
#       [simplified: no GLIDEIN_PS_FAILED*/FAILING lists in glidein_config]
#   glidein_run.sh cleanup WORK_DIR
#       glidein_exit -> gwms_process_scripts "$GWMS_DIR" cleanup glidein_config (glidein_paths.source):
#       in WORK_DIR/.gwms.d/exec/cleanup, lexicographic order, files ending in .ignore skipped,
#       executables run as ./NAME /absolute/glidein_config, other *.sh/*.source files sourced.
set -uo pipefail

mode=$1
work_dir=$(cd "$2" && pwd -P)
config="$work_dir/glidein_config"
config_value() { grep "^$1 " "$config" | tail -n 1 | cut -d ' ' -f 2-; }

case "$mode" in
    fetch)
        id=$3 file=$4 type=$5
        case "$id" in
            main) dir=$(config_value GLIDEIN_WORK_DIR) ;;
            entry) dir=$(config_value GLIDEIN_ENTRY_WORK_DIR) ;;
            *) echo "glidein_run.sh: unknown id $id" >&2; exit 2 ;;
        esac
        name=$(basename "$file")
        cp "$file" "$dir/$name"
        [[ "$type" == exec ]] || exit 0
        chmod u+x "$dir/$name"
        cleanup_script=$(config_value GLIDEIN_CLEANUP_SCRIPT)
        if [[ -n "$cleanup_script" && "$name" == "$cleanup_script" ]]; then
            echo "Skipping cleanup script $dir/$name ($cleanup_script)" >&2
            cp "$dir/$name" "$work_dir/.gwms.d/exec/cleanup/$name"
            chmod a+x "$work_dir/.gwms.d/exec/cleanup/$name"
            exit 0
        fi
        cd "$work_dir" || exit 1
        "$dir/$name" glidein_config "$id" < /dev/null
        ;;
    periodic)
        file=$3 id=$4
        tmp_dir=$(mktemp -d --tmpdir="$work_dir")
        cd "$tmp_dir" || exit 1
        GLIDEIN_PERIODIC_SCRIPT=true "$file" "$config" "$id" < /dev/null
        ret=$?
        end=$(date +%s)
        if [[ $ret -ne 0 ]]; then
            echo "FAILED_LAST = \"GLIDEIN_PS_1:$file\""
            echo "FAILED_LAST_REASON = \"Error running '$file'\""
            echo "FAILED_LAST_END = $end"
            echo "OK = False"
        fi
        echo "LAST = \"$file\""
        echo "LAST_END = $end"
        echo "-"
        cd "$work_dir" && rm -rf "$tmp_dir"
        exit "$ret"
        ;;
    cleanup)
        cd "$work_dir/.gwms.d/exec/cleanup" || exit 0
        for i in *; do
            [[ -e "$i" ]] || continue
            [[ "$i" != *.ignore ]] || continue
            if [[ -x "$i" ]]; then
                "./$i" "$config"
            elif [[ "$i" == *.sh || "$i" == *.source ]]; then
                # shellcheck disable=SC1090
                . "./$i"
            fi
            cd "$work_dir/.gwms.d/exec/cleanup" || exit 1
        done
        ;;
    *)
        echo "usage: glidein_run.sh fetch|periodic|cleanup WORK_DIR ..." >&2
        exit 2
        ;;
esac
