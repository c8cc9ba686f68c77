"""`dgaas-flow glidein render`: what a GlideinWMS operator pastes into the factory or frontend
configuration to turn Triton on in glideins, and what user jobs put in their submit files. The
scripts and their protocol are in providers/glideinwms/ (see its README)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "providers" / "glideinwms"
JOB_REQUIREMENTS = "(TARGET.TRITON_READY =?= True) && (TARGET.GLIDEIN_PS_TRITON_READY =!= False)"


@dataclass
class GlideinSettings:
    model_repository: str
    models: list[str]
    python: str = sys.executable
    launch: str = "apptainer"
    image: str | None = None
    client_image: str | None = None
    client_os: str = "triton-client"
    scripts: Path = SCRIPTS


def _xml(element: ET.Element) -> str:
    ET.indent(element, space="  ")
    return ET.tostring(element, encoding="unicode")


def files_xml(s: GlideinSettings) -> str:
    files = ET.Element("files")
    ET.SubElement(files, "file", absfname=str(s.scripts / "triton_cleanup.sh"), const="True", executable="False")
    ET.SubElement(files, "file", absfname=str(s.scripts / "triton_setup.sh"), const="True", executable="True",
                  after_entry="True", comment="start Triton if GLIDEIN_USE_TRITON")
    ET.SubElement(files, "file", absfname=str(s.scripts / "triton_health.sh"), const="True", executable="True",
                  after_entry="True", period="60", comment="Triton health in the machine ad")
    return _xml(files)


def attrs_xml(s: GlideinSettings) -> str:
    attrs = ET.Element("attrs")
    values = {"GLIDEIN_USE_TRITON": "True", "TRITON_MODEL_REPOSITORY": s.model_repository,
              "TRITON_MODELS": ",".join(s.models), "TRITON_LAUNCH": s.launch, "TRITON_IMAGE": s.image,
              "DGAAS_FLOW_PYTHON": s.python}
    for name, value in values.items():
        if value:
            ET.SubElement(attrs, "attr", name=name, value=value, parameter="True", type="string",
                          glidein_publish="True" if name == "GLIDEIN_USE_TRITON" else "False", job_publish="False")
    if s.client_image:
        for name, value in (("GLIDEIN_Singularity_Use", "PREFERRED"),
                            ("SINGULARITY_IMAGES_DICT", f"{s.client_os}:{s.client_image}")):
            ET.SubElement(attrs, "attr", name=name, value=value, parameter="True", type="string",
                          glidein_publish="True", job_publish="True")
    return _xml(attrs)


def submit_lines(s: GlideinSettings) -> str:
    models = " && ".join(f'stringListMember("{m}", TARGET.TRITON_MODELS)' for m in s.models)
    lines = [f"requirements = {JOB_REQUIREMENTS}" + (f" && {models}" if models else ""),
             "request_cpus = 1", "# no request_GPUs: the GPU belongs to the glidein's Triton server"]
    if s.client_image:
        lines.append(f'+REQUIRED_OS = "{s.client_os}"')
    return "\n".join(lines)


def render(s: GlideinSettings) -> str:
    return "\n".join([
        "<!-- factory or frontend configuration: the glidein's files (in this order) -->",
        files_xml(s), "",
        "<!-- and its attributes: GLIDEIN_USE_TRITON is the switch -->",
        attrs_xml(s), "",
        "# user jobs' submit description: only glideins with a ready Triton server; the job finds it in",
        "# $TRITON_ADDRESS (dgaas-flow's glideinwms provider does this for its blocks)",
        submit_lines(s), "",
    ])
