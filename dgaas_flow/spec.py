"""Pydantic models for workflows and provider profiles, and their loading from YAML.

Every relative path inside a YAML file is relative to that file, so a workflow folder can be moved
or run from anywhere. Every mistake becomes a `UserError` that names the file, the line, the field
path and what was expected.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from dgaas_flow.errors import UserError
from dgaas_flow.glidein import JOB_REQUIREMENTS
from dgaas_flow.pilot.settings import TritonSettings

BUILTIN_PROVIDERS = Path(__file__).resolve().parent.parent / "providers"


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


class InputSpec(Strict):
    files: str = Field(description="glob of input files, e.g. data/images/**/*.png")
    format: Literal["image", "npy", "rows"] = Field(
        "image", description="image or npy: one file is one item; rows: each .npy file is an array, one item per row"
    )
    labels: Literal["none", "parent_dir"] = Field(
        "none", description="parent_dir: the file's folder name is its label (enables accuracy)"
    )
    tensor: str | None = Field(None, description="model input name; default: the model's only input")


class OutputSpec(Strict):
    dir: Path | None = Field(None, description="run folder; default: runs/<workflow name>")
    tensor: str | None = Field(None, description="model output name; default: the first output")
    top_k: int = Field(
        1, ge=0, description="best classes per item with their scores, named as Triton's classification "
        "extension names them (the model's label file); 0: the raw output values"
    )


class ClientSettings(Strict):
    protocol: Literal["http", "grpc"] = "http"
    batch_size: int | None = Field(None, ge=1, description="items per request; default: max_batch_size")
    timeout_s: float = Field(30.0, gt=0, description="deadline of one request")
    retries: int = Field(5, ge=0, description="retries of a failed request (re-resolving the server)")
    backoff_s: float = Field(
        0.5, ge=0, description="longest first wait for the server to be ready again, doubled each retry"
    )
    token_file: Path | None = Field(
        None, description="bearer token file for the gateway; default: DGAAS_TOKEN, then WLCG token discovery"
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
# Providers


class ProviderBase(Strict):
    name: str | None = None
    workers_per_node: int = Field(2, ge=1, description="Parsl workers (CPU clients) per node")
    cores_per_worker: float = Field(1.0, gt=0)
    nodes_per_block: int = Field(1, ge=1)
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0, description="GPUs each node's pilot gets")
    worker_init: str = Field("", description="shell lines run before the workers start")
    python: str | None = Field(None, description="python on the nodes; default: the driver's own")
    address: str | None = Field(
        None, description="address the workers reach the driver at; default: 127.0.0.1 for local, else probed"
    )
    strategy_period_s: float = Field(1.0, gt=0, description="how often Parsl rescales blocks")
    heartbeat_threshold_s: int = Field(
        30, ge=2, description="a block silent this long is lost and its tasks are retried elsewhere"
    )
    parsl_log: Literal["debug", "info", "warning"] = Field(
        "warning", description="level of Parsl's own log (runs/<name>/parsl/NNN/parsl.log and the interchange's); "
        "debug writes a dozen lines a task, about 1.4 µs an item at chunks of 1,024: set it when debugging Parsl",
    )

    @property
    def max_workers(self) -> int:
        """Workers of every block the provider may run at once."""
        return self.workers_per_node * self.nodes_per_block * self.max_blocks


class LocalProviderSpec(ProviderBase):
    kind: Literal["local"]


class SlurmProviderSpec(ProviderBase):
    kind: Literal["slurm"]
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    walltime: str = Field("01:00:00", pattern=r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$")
    exclusive: bool = Field(False, description="whole nodes; off so nodes can be shared")
    gpu_request: Literal["gres", "gpus-per-node"] = "gres"
    mem_per_node_gb: int | None = Field(None, ge=1, description="#SBATCH --mem")
    launcher: Literal["srun", "single_node"] = "srun"
    scheduler_options: list[str] = Field(default_factory=list, description="extra #SBATCH lines")


class CondorProviderSpec(ProviderBase):
    kind: Literal["htcondor"]
    request_memory_mb: int = Field(2000, ge=1)
    requirements: str = Field("", description="ClassAd expression the slots must match")
    singularity_image: str | None = Field(None, description="+SingularityImage of the block jobs")
    submit_lines: list[str] = Field(default_factory=list, description="extra submit description lines")


class GlideinWMSProviderSpec(CondorProviderSpec):
    """Blocks go to glideins whose setup script already started a Triton pilot; the block starts
    none of its own and its tasks find the glidein's server through TRITON_ADDRESS."""

    kind: Literal["glideinwms"]  # type: ignore[assignment]
    triton_requirements: str = Field(
        JOB_REQUIREMENTS,
        description="selects glideins that advertise a ready Triton server (and whose health cron agrees)"
    )


ProviderSpec = Annotated[
    LocalProviderSpec | SlurmProviderSpec | CondorProviderSpec | GlideinWMSProviderSpec,
    Field(discriminator="kind"),
]


class ProviderFile(Strict):
    """A provider profile file: one provider."""

    provider: ProviderSpec


# --------------------------------------------------------------------------------------------
# Workflow


class Workflow(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    provider: ProviderSpec
    triton: TritonSettings = Field(default_factory=TritonSettings)
    model: ModelSpec
    inputs: InputSpec
    outputs: OutputSpec = Field(default_factory=OutputSpec)
    client: ClientSettings = Field(default_factory=ClientSettings)
    server: ServerSpec = Field(default_factory=ServerSpec)
    chunk_size: int | Literal["auto"] = Field(
        "auto", description="items per Parsl task; auto: the model's max_batch_size for each worker's first "
        "task, then 8 times that (see dgaas_flow.chunking)"
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


# --------------------------------------------------------------------------------------------
# Loading


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{path}{where}: not valid YAML: {problem}") from None


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Line of the deepest YAML node on the error's path, so the message points at the text."""
    line = node.start_mark.line + 1 if node else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == key]
            if not match:
                key_nodes = [k for k, _ in node.value if k.value == key]
                return key_nodes[0].start_mark.line + 1 if key_nodes else line
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _describe(error: dict[str, Any]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown field (misspelt? `dgaas-flow schema workflow|provider` lists the fields)"
    if kind == "missing":
        return "required field is missing"
    given = error.get("input")
    if isinstance(given, str | int | float | bool) and kind != "union_tag_invalid":
        return f"{msg} (got {given!r})"
    return msg


def validation_message(exc: ValidationError, path: Path, node: yaml.Node | None, prefix=()) -> str:
    lines = []
    for error in exc.errors():
        raw = error["loc"]
        loc = tuple(x for i, x in enumerate(raw) if not (i and raw[i - 1] == "provider" and x in _UNION_TAGS))
        line = _line_of(node, loc[len(prefix):]) if loc[: len(prefix)] == prefix else None
        field = ".".join(str(x) for x in loc) or "(top level)"
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {field}: {_describe(error)}")
    return "\n".join(lines)


_UNION_TAGS = {"local", "slurm", "htcondor", "glideinwms"}


def provider_search_path(workflow_dir: Path | None) -> list[Path]:
    """Where a provider name is looked up: $DGAAS_PROVIDERS_PATH, providers/ folders above the
    workflow, ./providers, then the profiles shipped beside this package."""
    dirs = [Path(p) for p in os.environ.get("DGAAS_PROVIDERS_PATH", "").split(os.pathsep) if p]
    if workflow_dir:
        dirs += [d / "providers" for d in (workflow_dir, *workflow_dir.parents)]
    dirs += [Path.cwd() / "providers", BUILTIN_PROVIDERS]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.append(d.resolve())
    return seen


def find_provider(ref: str, workflow_dir: Path | None) -> Path | None:
    """A provider reference is a file path (has a slash or a .yaml suffix) or a profile name."""
    if "/" in ref or ref.endswith((".yaml", ".yml")):
        candidate = Path(ref) if Path(ref).is_absolute() else (workflow_dir or Path.cwd()) / ref
        return candidate if candidate.is_file() else None
    for d in provider_search_path(workflow_dir):
        for suffix in (".yaml", ".yml"):
            if (d / f"{ref}{suffix}").is_file():
                return d / f"{ref}{suffix}"
    return None


def load_provider(path: Path) -> LocalProviderSpec | SlurmProviderSpec | CondorProviderSpec:
    data, node = _read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with a `provider:` section")
    try:
        spec = ProviderFile.model_validate(data).provider
    except ValidationError as exc:
        raise UserError(validation_message(exc, path, node)) from None
    if spec.name is None:
        spec.name = path.stem
    return spec


def _resolve_provider_ref(ref: str, where: str, workflow_dir: Path | None) -> dict[str, Any]:
    found = find_provider(ref, workflow_dir)
    if found is None:
        if ref == "local":
            return {"kind": "local", "name": "local"}
        searched = ", ".join(str(d) for d in provider_search_path(workflow_dir)) or "(no folders)"
        raise UserError(
            f"{where}: provider: no provider profile named {ref!r}; looked for {ref}.yaml in: {searched}"
        )
    spec = load_provider(found)
    return spec.model_dump()


def load_workflow(path: str | Path, provider: str | None = None) -> Workflow:
    """Load and fully check a workflow file; `provider` (a name or file) overrides its own."""
    path = Path(path).resolve()
    data, node = _read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of workflow fields (name, model, inputs, ...)")
    data = dict(data)
    if provider is not None:
        data["provider"] = _resolve_provider_ref(provider, "--provider", None)
    elif isinstance(data.get("provider", "local"), str):
        line = _line_of(node, ("provider",))
        data["provider"] = _resolve_provider_ref(
            data.get("provider", "local"), f"{path}:{line}" if line else str(path), path.parent
        )
    try:
        wf = Workflow.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(exc, path, node)) from None
    wf._source = path
    _make_paths_absolute(wf)
    check_workflow(wf, node)
    return wf


def _make_paths_absolute(wf: Workflow) -> None:
    base = wf.base_dir
    wf.model.repository = (base / wf.model.repository).resolve()
    if not os.path.isabs(wf.inputs.files):
        wf.inputs.files = str(base / wf.inputs.files)
    if wf.client.token_file is not None:
        wf.client.token_file = (base / wf.client.token_file).resolve()
    if wf.outputs.dir is not None:
        wf.outputs.dir = (base / wf.outputs.dir).resolve()
    if wf.triton.binary and not os.path.isabs(wf.triton.binary) and "/" in wf.triton.binary:
        wf.triton.binary = str((base / wf.triton.binary).resolve())


def check_workflow(wf: Workflow, node: yaml.Node | None = None) -> None:
    """Checks that need the filesystem: the model exists, the input glob matches something."""
    where = lambda loc: f"{wf.source}:{_line_of(node, loc)}" if node else str(wf.source)  # noqa: E731
    repo = wf.model.repository
    if not repo.is_dir():
        raise UserError(f"{where(('model', 'repository'))}: model.repository: folder {repo} does not exist")
    if not (repo / wf.model.name / "config.pbtxt").is_file() and not (repo / wf.model.name).is_dir():
        models = sorted(p.name for p in repo.iterdir() if p.is_dir())
        raise UserError(
            f"{where(('model', 'name'))}: model.name: no model {wf.model.name!r} in {repo} "
            f"(it holds: {', '.join(models) or 'nothing'})"
        )
    if next(glob.iglob(wf.inputs.files, recursive=True), None) is None:
        raise UserError(
            f"{where(('inputs', 'files'))}: inputs.files: the glob {wf.inputs.files} matches no file"
            " (run the workflow's prepare step first?)"
        )


def validate_file(path: Path) -> str:
    """`dgaas-flow validate`: a file is a provider profile if it has a top-level `provider:`
    mapping and nothing else, otherwise a workflow. Returns a one-line description."""
    data, _ = _read_yaml(path)
    if isinstance(data, dict) and set(data) == {"provider"} and isinstance(data["provider"], dict):
        spec = load_provider(path)
        return f"{path}: ok (provider {spec.name}, kind {spec.kind})"
    wf = load_workflow(path)
    return f"{path}: ok (workflow {wf.name}, model {wf.model.name}, provider {wf.provider.name})"


def json_schema(which: Literal["workflow", "provider"]) -> dict[str, Any]:
    model = Workflow if which == "workflow" else ProviderFile
    return model.model_json_schema()
