#!/bin/bash
# STAND-IN, for tests only: mirrors glideinWMS/glideinwms creation/web_base/error_gen.sh (read at commit
# efdc530a5). A real glidein names its copy in glidein_config as ERROR_GEN_PATH (setup_script.sh writes
# "ERROR_GEN_PATH $GLIDEIN_WORK_DIR/error_gen.sh"). Written for these tests, same interface and output:
#
#   error_gen.sh -ok    ID [METRIC VALUE]...
#   error_gen.sh -error ID FAILURE_TYPE "DETAIL" [METRIC VALUE]...
#
# Each call REPLACES ./otrb_output.xml (in the current directory, the glidein work dir for setup
# scripts) with one OSGTestResult document:
#   <?xml version="1.0"?>
#   <OSGTestResult id="ID" version="4.3.1">
#     <result>
#       <status>OK|ERROR</status>
#       <metric name="failure" ts="..." uri="local">FAILURE_TYPE</metric>     (-error only, first)
#       <metric name="METRIC" ts="2026-01-01T00:00:00+00:00" uri="local">VALUE</metric>
#     </result>
#     <detail>                                                                 (-error only)
#       DETAIL, every line indented by 4 spaces
#     </detail>
#   </OSGTestResult>
# Values are written as given (no XML escaping), as upstream does. Exit status 0; 1 for an unknown option.

out=otrb_output.xml

metrics() {
    while [[ $# -gt 1 ]]; do
        echo "    <metric name=\"$1\" ts=\"$(date "+%Y-%m-%dT%H:%M:%S%:z")\" uri=\"local\">$2</metric>"
        shift 2
    done
}

head_lines() {
    printf '<?xml version="1.0"?>\n<OSGTestResult id="%s" version="4.3.1">\n  <result>\n    <status>%s</status>\n' "$1" "$2"
}

case "$1" in
    -ok)
        shift
        id=$1
        shift
        { head_lines "$id" OK; metrics "$@"; echo "  </result>"; echo "</OSGTestResult>"; } > "$out"
        ;;
    -error)
        shift
        id=$1 failure=$2 detail=$3
        shift 3
        {
            head_lines "$id" ERROR
            metrics failure "$failure" "$@"
            echo "  </result>"
            echo "  <detail>"
            echo "$detail" | awk '{print "    " $0}'
            echo "  </detail>"
            echo "</OSGTestResult>"
        } > "$out"
        ;;
    *)
        {
            echo "Unknown option $1"
            echo "Usage: -error|-ok [params]"
            echo "       -error id failstr detailfail [metricid metricval]+"
            echo "       -ok    id                    [metricid metricval]+"
        } 1>&2
        exit 1
        ;;
esac
