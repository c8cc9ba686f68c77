"""A pilot-backed Parsl executor for any Parsl configuration: every block it starts runs one
pilot on each of its nodes, serving the models asked for, and its workers find that pilot with
`triton_client()`. It mixes with the script's other executors (a CPU pool for preprocessing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from parsl.executors import HighThroughputExecutor

from dgaas_flow.errors import UserError
from dgaas_flow.pilot.settings import PilotConfig, TritonSettings
from dgaas_flow.sites import ProviderBase
from dgaas_flow.sites.executor import EXECUTOR_LABEL, make_executor
from dgaas_flow.specs.loading import provider_spec, repository_models


def pilot_executor(
    provider: str | Path | ProviderBase = "local", *, repository: str | Path | None = None,
    models: Sequence[str] | None = None, label: str = EXECUTOR_LABEL, run_dir: str | Path | None = None,
    triton: TritonSettings | None = None, gateway: str | None = None, token_file: str | Path | None = None,
) -> HighThroughputExecutor:
    """A Parsl ``HighThroughputExecutor`` whose every block starts exactly one pilot per node.

    Parameters
    ----------
    provider
        A provider profile: a name (``local``, ``wilson-cluster``, one under ``providers/``), a
        YAML file, or a provider object (`dgaas_flow.sites`).
    repository
        The Triton model repository the pilots serve from (as the nodes see it).
    models
        The models each pilot loads; None: every model of the repository.
    label
        The executor's label: apps choose it with ``@python_app(executors=[label])``.
    run_dir
        Where the pilots' settings, endpoint files and logs go; on a cluster, a folder the nodes
        share. Default: ``runs/<label>``.
    triton
        How pilots start Triton (`TritonSettings`); default: its defaults.
    gateway
        ``host:port`` of a dgaas-flow gateway: then the blocks start no pilot and their apps reach
        pilots elsewhere through it (their `triton_client()` finds it as ``DGAAS_GATEWAY_URL``).
    token_file
        With a gateway: the bearer token the apps send (exported as ``BEARER_TOKEN_FILE``).
    """
    spec = provider_spec(provider)
    folder = Path(run_dir or Path("runs") / label).resolve()
    environment: dict[str, str] = {}
    pilot_config: Path | None = None
    if gateway is not None:
        environment["DGAAS_GATEWAY_URL"] = gateway
        if token_file is not None:
            environment["BEARER_TOKEN_FILE"] = str(Path(token_file).resolve())
    elif spec.starts_pilots:
        if repository is None:
            raise UserError("pilot_executor: give the model repository the pilots serve (repository=...), "
                            "or a gateway (gateway=host:port) to reach pilots elsewhere")
        repo = Path(repository).resolve()
        repository_models(repo, list(models) if models is not None else None)
        folder.mkdir(parents=True, exist_ok=True)
        pilot_config = folder / f"pilot-{label}.json"
        pilot_config.write_text(PilotConfig(
            triton=triton or TritonSettings(), repository=repo, models=list(models or []),
            registry=folder / "pilots", log_dir=folder / "logs",
        ).model_dump_json(indent=2))
    return make_executor(spec, pilot_config, label, environment)
