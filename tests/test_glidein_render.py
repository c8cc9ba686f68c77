"""`dgaas-flow glidein render`: factory/frontend XML an operator can paste, and the jobs' submit lines."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from dgaas_flow.sites import GlideinWMSProviderSpec
from dgaas_flow.sites.glideinwms import SCRIPTS
from tests.conftest import run_cli


def test_render_gives_pasteable_files_attrs_and_submit_lines():
    result = run_cli("glidein", "render", "--model-repository", "/cvmfs/vo/models & more", "--models", "a,b",
                     "--client-image", "/cvmfs/vo/client.sif", "--python", "/cvmfs/vo/bin/python")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    files = ET.fromstring(text[text.index("<files>"):text.index("</files>") + 8])
    by_name = {os.path.basename(f.get("absfname")): f.attrib for f in files}
    assert list(by_name) == ["triton_cleanup.sh", "triton_setup.sh", "triton_health.sh"]  # run order
    assert by_name["triton_setup.sh"]["executable"] == by_name["triton_setup.sh"]["const"] == "True"
    assert by_name["triton_health.sh"]["period"] == "60" and "type" not in by_name["triton_setup.sh"]
    for attrib in by_name.values():
        assert os.path.isfile(attrib["absfname"]) and attrib["absfname"].startswith(str(SCRIPTS))
    attrs = {a.get("name"): a.get("value") for a in ET.fromstring(text[text.index("<attrs>"):
                                                                       text.index("</attrs>") + 8])}
    assert attrs["GLIDEIN_USE_TRITON"] == "True" and attrs["TRITON_MODELS"] == "a,b"
    assert attrs["TRITON_MODEL_REPOSITORY"] == "/cvmfs/vo/models & more"  # escaped in the XML, intact here
    assert attrs["SINGULARITY_IMAGES_DICT"] == "triton-client:/cvmfs/vo/client.sif"
    assert attrs["GLIDEIN_Singularity_Use"] == "PREFERRED" and attrs["DGAAS_FLOW_PYTHON"] == "/cvmfs/vo/bin/python"
    requirements = next(line for line in text.splitlines() if line.startswith("requirements = "))
    assert requirements.startswith(f"requirements = {GlideinWMSProviderSpec(kind='glideinwms').triton_requirements}")
    assert 'stringListMember("a", TARGET.TRITON_MODELS)' in requirements
    assert '+REQUIRED_OS = "triton-client"' in text and "request_GPUs" not in text.replace("no request_GPUs", "")
