"""The workflow: what to infer (model, inputs, outputs), with which client, on which provider, with
which Triton settings. Provider profiles are the sites' (dgaas_flow.sites); loading from YAML is
dgaas_flow.specs.loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from dgaas_flow.inputs.formats import InputSpec
from dgaas_flow.pilot.settings import TritonSettings
from dgaas_flow.sites import ProviderSpec


class Strict(BaseModel):
    """Unknown fields are errors: a misspelt option must never be silently ignored."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Triton server and model


class ModelSpec(Strict):
    name: str = Field(description="model name in the repository")
    version: str = Field("", description="model version; empty: the server's policy")
    repository: Path = Field(description="Triton model repository folder")


# --------------------------------------------------------------------------------------------
# Inputs, outputs, client


HOOK = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class OutputSpec(Strict):
    dir: Path | None = Field(None, description="run folder; default: runs/<workflow name>")
    tensor: str | None = Field(
        None, description="the output that top_k ranks (a classification); default: the first output"
    )
    keep: list[str] | None = Field(
        None, description="the model outputs each result keeps; default: all of them (others than `tensor` as "
        "raw values, under their names)"
    )
    top_k: int = Field(
        1, ge=0, description="best classes per item with their scores, named as Triton's classification "
        "extension names them (the model's label file); 0: the raw output values"
    )
    format: Literal["jsonl", "parquet"] = Field(
        "jsonl", description="jsonl: results.jsonl, one JSON line per item; parquet: results/part-*.parquet, a "
        "column per field (arrays as arrays), the complete parts listed in results/manifest.json"
    )
    part_rows: int = Field(
        1_000_000, ge=1, description="parquet: rows a part holds before the next one starts (each task's results "
        "are one row group of it)"
    )


class ClientSettings(Strict):
    protocol: Literal["http", "grpc"] = Field("http", description="how tasks talk to Triton")
    batch_size: int | None = Field(None, ge=1, description="items per request; default: max_batch_size")
    timeout_s: float = Field(30.0, gt=0, description="deadline of one request")
    retries: int = Field(5, ge=0, description="retries of a failed request (re-resolving the server)")
    backoff_s: float = Field(
        0.5, ge=0, description="longest first wait for the server to be ready again, doubled each retry"
    )
    token_file: Path | None = Field(
        None, description="bearer token file for the gateway; default: DGAAS_TOKEN, then WLCG token discovery"
    )
    fallback: Literal["none", "local"] = Field(
        "none", description="when no pilot serves (the node's is gone or restarting, no other answers): none: "
        "the request fails and is retried; local: a task starts a Triton server on its own node's CPUs from "
        "the session's pilot settings, shared by the node's workers (CMS SONIC's local fallback)",
    )


class ServerSpec(Strict):
    url: str | None = Field(
        None, description="explicit server, http://host:port or grpc://host:port; overrides discovery"
    )
    gateway: str | None = Field(
        None, description="host:port of a dgaas-flow gateway (HTTP and gRPC on one port); overrides discovery"
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "grpc://")):
            raise ValueError("must start with http:// or grpc://")
        return value


class ScaleStep(Strict):
    blocks: int = Field(ge=1, description="pilots (one per block) in this step")
    workers_per_node: int | None = Field(None, ge=1, description="client workers per block; default: the provider's")
    items: int | None = Field(None, ge=1, description="items this step infers (the inputs are cycled if fewer)")
    hold_s: float | None = Field(None, gt=0, description="or: how long this step keeps inferring")

    @model_validator(mode="after")
    def _one_bound(self) -> ScaleStep:
        if (self.items is None) == (self.hold_s is None):
            raise ValueError("give exactly one of items or hold_s")
        return self


class ScaleTest(Strict):
    steps: list[ScaleStep] = Field(min_length=1, description="run in order; each starts its own blocks and pilots")


# --------------------------------------------------------------------------------------------
# Workflow


class Workflow(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="the workflow's name; its run folder is runs/<name>")
    provider: ProviderSpec = Field(description="a profile name, a file, or an inline mapping (in YAML; default: local)")
    triton: TritonSettings = Field(default_factory=TritonSettings, description="how each pilot starts its server")
    model: ModelSpec = Field(description="the model to infer with")
    inputs: InputSpec = Field(description="the input files and how they are read; `format` says which fields "
                              "apply (image, npy, rows, npz, parquet, hdf5, root, or a reader `module:Class`)")
    preprocess: str | None = Field(
        None, pattern=HOOK, description="`module:function` run in the worker on each batch read: named arrays in, "
        "named arrays out (the module is looked up beside the workflow file first)"
    )
    postprocess: str | None = Field(
        None, pattern=HOOK, description="`module:function` run on each request: (inputs, outputs) in, result "
        "columns out (a mapping of name to one value per item)"
    )
    outputs: OutputSpec = Field(default_factory=OutputSpec, description="what each result keeps, and where")
    client: ClientSettings = Field(default_factory=ClientSettings, description="how tasks send requests")
    server: ServerSpec = Field(default_factory=ServerSpec, description="a server to use instead of discovery")
    chunk_size: int | Literal["auto"] = Field(
        "auto", description="items per Parsl task; auto: the model's max_batch_size for each worker's first "
        "task, then 8 times that, up to 16 for a model whose requests come back in a few ms (see "
        "dgaas_flow.campaign.chunking)"
    )
    max_in_flight: int | None = Field(
        None, ge=1, description="tasks submitted but not finished; default: 2 x all workers"
    )
    task_retries: int = Field(2, ge=0, description="Parsl retries of a task whose worker was lost")
    scale_test: ScaleTest | None = Field(None, description="steps of `dgaas-flow scale-test`")

    _source: Path | None = PrivateAttr(None)

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _whole_or_auto(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("expected a number of items of at least 1, or auto")

    @property
    def source(self) -> Path | None:
        """The YAML file this workflow came from."""
        return self._source

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def in_flight_limit(self) -> int:
        return self.max_in_flight or 2 * self.provider.max_workers

    def out_dir(self, override: str | Path | None = None) -> Path:
        return Path(override or self.outputs.dir or Path("runs") / self.name).resolve()
