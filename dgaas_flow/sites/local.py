"""`kind: local`: blocks are processes on this machine (a laptop, a login node, a test)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from dgaas_flow.sites.base import ProviderBase

if TYPE_CHECKING:
    from parsl.providers.base import ExecutionProvider


class LocalProviderSpec(ProviderBase):
    kind: Literal["local"] = Field(description="the scheduler")

    submits_batch_jobs: ClassVar[bool] = False
    default_address: ClassVar[str | None] = "127.0.0.1"

    def parsl_provider(self, worker_init: str) -> ExecutionProvider:
        from parsl.launchers import SingleNodeLauncher
        from parsl.providers import LocalProvider

        return LocalProvider(launcher=SingleNodeLauncher(debug=False), **self.block_options(worker_init))
