"""Sites: one module per scheduler kind, each holding its provider profile's model and its
translation to a Parsl provider. Adding a scheduler is adding a module and naming its model here.
`sites.executor` turns any of them into the pilot-backed Parsl executor."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from dgaas_flow.sites.base import ProviderBase
from dgaas_flow.sites.glideinwms import GlideinWMSProviderSpec
from dgaas_flow.sites.htcondor import CondorProviderSpec
from dgaas_flow.sites.local import LocalProviderSpec
from dgaas_flow.sites.slurm import SlurmProviderSpec

SITES: tuple[type[ProviderBase], ...] = (
    LocalProviderSpec, SlurmProviderSpec, CondorProviderSpec, GlideinWMSProviderSpec,
)
ProviderSpec = Annotated[
    LocalProviderSpec | SlurmProviderSpec | CondorProviderSpec | GlideinWMSProviderSpec,
    Field(discriminator="kind"),
]
KINDS = tuple(site.model_fields["kind"].annotation.__args__[0] for site in SITES)  # type: ignore[union-attr]

__all__ = ["KINDS", "SITES", "CondorProviderSpec", "GlideinWMSProviderSpec", "LocalProviderSpec", "ProviderBase",
           "ProviderSpec", "SlurmProviderSpec"]
