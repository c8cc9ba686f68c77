"""Workflows and provider profiles loaded from YAML and fully checked.

Every relative path inside a YAML file is relative to that file, so a workflow folder can be moved
or run from anywhere. Every mistake becomes a `UserError` that names the file, the line, the field
path and what was expected.
"""

from __future__ import annotations

import glob
import os
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dgaas_flow.errors import UserError
from dgaas_flow.inputs.formats import FORMAT_TAGS
from dgaas_flow.sites import KINDS, ProviderBase, ProviderSpec
from dgaas_flow.specs.workflow import Workflow

BUILTIN_PROVIDERS = Path(str(files("dgaas_flow") / "providers"))


class ProviderFile(BaseModel):
    """A provider profile file: one provider."""

    model_config = ConfigDict(extra="forbid")

    provider: ProviderSpec = Field(description="the profile; `kind` says which scheduler")


def max_yaml_bytes() -> int:
    """The largest workflow or profile file read: a configuration, not a data set (a list of a
    million items belongs in input files); DGAAS_MAX_YAML_BYTES raises it."""
    return int(os.environ.get("DGAAS_MAX_YAML_BYTES", 1_000_000))


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data and its node tree (for line numbers), from one parse."""
    try:
        size, limit = path.stat().st_size, max_yaml_bytes()
        if size > limit:
            raise UserError(f"{path}: {size} bytes, more than the {limit} a workflow or provider file may have; "
                            "list inputs with inputs.files (a glob), or raise DGAAS_MAX_YAML_BYTES")
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{path}{where}: not valid YAML: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


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
        loc = tuple(x for i, x in enumerate(raw) if not (i and raw[i - 1] == "provider" and x in KINDS)
                    and not (i and raw[i - 1] == "inputs" and x in FORMAT_TAGS))
        line = _line_of(node, loc[len(prefix):]) if loc[: len(prefix)] == prefix else None
        field = ".".join(str(x) for x in loc) or "(top level)"
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {field}: {_describe(error)}")
    return "\n".join(lines)



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


def load_provider(path: Path) -> ProviderBase:
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
        folders = provider_search_path(workflow_dir)
        names = sorted({"local"} | {f.stem for d in folders for f in d.glob("*.y*ml")})
        raise UserError(
            f"{where}: provider: no provider profile named {ref!r}; the profiles are: {', '.join(names)} "
            f"(looked for {ref}.yaml in: {', '.join(map(str, folders)) or '(no folders)'})"
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


def repository_models(repo: Path, models: list[str] | None, where: str = "repository",
                      where_model: str = "models") -> list[str]:
    """The models a pilot would serve from `repo`: those named (each must be a folder there), or
    None for all of them."""
    if not repo.is_dir():
        raise UserError(f"{where}: folder {repo} does not exist")
    held = sorted(p.name for p in repo.iterdir() if p.is_dir())
    for model in models or []:
        if model not in held:
            raise UserError(f"{where_model}: no model {model!r} in {repo} (it holds: {', '.join(held) or 'nothing'})")
    return list(models) if models is not None else held


def provider_spec(ref: str | Path | ProviderBase) -> ProviderBase:
    """A provider profile from its name, its file, or itself (see `provider_search_path`)."""
    if isinstance(ref, ProviderBase):
        return ref
    data = _resolve_provider_ref(str(ref), "provider", None)
    return ProviderFile.model_validate({"provider": data}).provider


def check_workflow(wf: Workflow, node: yaml.Node | None = None) -> None:
    """Checks that need the filesystem: the model exists, the input glob matches something."""
    where = lambda loc: f"{wf.source}:{_line_of(node, loc)}" if node else str(wf.source)  # noqa: E731
    repository_models(wf.model.repository, [wf.model.name], where(("model", "repository")) + ": model.repository",
                      where(("model", "name")) + ": model.name")
    if next(glob.iglob(wf.inputs.files, recursive=True), None) is None:
        raise UserError(
            f"{where(('inputs', 'files'))}: inputs.files: the glob {wf.inputs.files} matches no file"
            " (run the workflow's prepare step first?)"
        )
    from dgaas_flow.specs.checks import check_model_and_data  # imports tritonclient: only when checking

    problems = check_model_and_data(wf)
    if problems:
        raise UserError("\n".join(f"error: {p}" if i else p for i, p in enumerate(problems)))


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
