"""`kind: glideinwms`: the glidein's setup phase starts the pilot (custom scripts shipped in
`dgaas_flow/providers/glideinwms/`, see its README); blocks are CPU-only jobs that match such
glideins and find the server through TRITON_ADDRESS. `dgaas-flow glidein render` prints what an
operator pastes into the factory or frontend configuration, and what user jobs put in their
submit files."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from dgaas_flow.sites.htcondor import CondorProviderSpec

SCRIPTS = Path(str(files("dgaas_flow") / "providers" / "glideinwms"))
JOB_REQUIREMENTS = "(TARGET.TRITON_READY =?= True) && (TARGET.GLIDEIN_PS_TRITON_READY =!= False)"


class GlideinWMSProviderSpec(CondorProviderSpec):
    """Blocks go to glideins whose setup script already started a Triton pilot; the block starts
    none of its own and its tasks find the glidein's server through TRITON_ADDRESS."""

    kind: Literal["glideinwms"] = Field(description="the scheduler")  # type: ignore[assignment]
    triton_requirements: str = Field(
        JOB_REQUIREMENTS,
        description="selects glideins that advertise a ready Triton server (and whose health cron agrees)"
    )

    starts_pilots: ClassVar[bool] = False

    def job_requirements(self) -> str:
        return " && ".join(f"({p})" for p in (self.requirements, self.triton_requirements) if p)

    def job_submit_lines(self) -> list[str]:
        """No request_GPUs: on glideins the GPU belongs to the glidein's server; blocks are CPU clients."""
        return [line for line in super().job_submit_lines() if not line.startswith("request_GPUs")]


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
