"""Checks of a workflow against its model's config.pbtxt and a sample of its first input file, run
by `dgaas-flow validate` and `run` before any pilot or block starts: input and output names, data
types, dims and max_batch_size on one side; the data's fields, their shapes and whether their values
cast safely on the other. Every mismatch is reported with file, field and expectation."""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dgaas_flow.apps.client import ModelInfo, TensorInfo

SAMPLE_FILES = 5  # input files tried for a readable sample


@dataclass(frozen=True)
class ModelConfig:
    path: Path
    info: ModelInfo
    formats: dict[str, str]  # input name -> FORMAT_NONE, FORMAT_NCHW, FORMAT_NHWC


def read_config(path: Path) -> ModelConfig:
    """config.pbtxt parsed with Triton's own protobuf schema (shipped by tritonclient[grpc])."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    try:
        config = text_format.Parse(path.read_text(), pb.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: not a valid model config: {exc}") from None

    def tensors(items: Any) -> tuple[TensorInfo, ...]:
        out = []
        for t in items:
            dims = tuple(int(d) for d in t.dims)
            out.append(TensorInfo(t.name, pb.DataType.Name(t.data_type).removeprefix("TYPE_").replace(
                "STRING", "BYTES"), dims))
        return tuple(out)

    info = ModelInfo(tensors(config.input), tensors(config.output), int(config.max_batch_size))
    formats = {t.name: pb.ModelInput.Format.Name(t.format) for t in config.input}
    return ModelConfig(path, info, formats)


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(folder))


def check_model_and_data(wf: Any) -> list[str]:
    """The mismatches between the workflow, its model's config.pbtxt and a sample of its first input
    file, each naming the file, the field and what was expected; empty: none found. A model without
    a config.pbtxt the driver can read (auto-completed by the server) is not checked."""
    config_path = wf.model.repository / wf.model.name / "config.pbtxt"
    if not config_path.is_file():
        return []
    try:
        config = read_config(config_path)
    except (ValueError, OSError) as exc:
        return [str(exc)]
    info, problems = config.info, []
    inputs = [t.name for t in info.inputs]
    outputs = [t.name for t in info.outputs]
    where = f"{wf.source}" if wf.source else "workflow"
    if not inputs or not outputs:
        problems.append(f"{config_path}: the model declares no {'inputs' if not inputs else 'outputs'}")
    for name in (wf.inputs.tensors or {}):
        if name not in inputs:
            problems.append(f"{where}: inputs.tensors.{name}: the model has no input {name!r} "
                            f"({config_path} declares {inputs})")
    if wf.inputs.tensor is not None and wf.inputs.tensor not in inputs:
        problems.append(f"{where}: inputs.tensor: the model has no input {wf.inputs.tensor!r} "
                        f"({config_path} declares {inputs})")
    for label, names in (("outputs.tensor", [wf.outputs.tensor] if wf.outputs.tensor else []),
                         ("outputs.keep", wf.outputs.keep or [])):
        for name in names:
            if name not in outputs:
                problems.append(f"{where}: {label}: the model has no output {name!r} ({config_path} declares "
                                f"{outputs})")
    if wf.client.batch_size and info.max_batch_size and wf.client.batch_size > info.max_batch_size:
        problems.append(f"{where}: client.batch_size: {wf.client.batch_size} is more than the model's "
                        f"max_batch_size {info.max_batch_size} ({config_path})")
    if problems:
        return problems
    return _check_sample(wf, info, config_path)


def _check_sample(wf: Any, info: ModelInfo, config_path: Path) -> list[str]:
    """The first readable input file's first items, read, hooked, bound and cast as a task would."""
    from dgaas_flow.apps.client import fit_shape
    from dgaas_flow.apps.tasks import InferRequest, bind, load_hook, safe_cast
    from dgaas_flow.inputs import ChunkReader, enumerate_slices

    req = InferRequest.from_workflow(wf)
    first_error = None
    with _on_path(wf.base_dir):
        reader = ChunkReader(req.reader_spec())
        # the first file that reads is the sample: a broken file is its own item's error, not the workflow's
        for sample in itertools.islice((s for s in enumerate_slices(wf.inputs.files, wf.inputs)
                                        if s.problem is None), SAMPLE_FILES):
            data = reader.read(sample.path, sample.start, min(sample.count, 4))
            if not isinstance(data, Exception):
                break
            first_error = first_error or f"{sample.path}: cannot read it as format {wf.inputs.format}: {data}"
        else:
            return [f"{first_error} (nor the next input files)"] if first_error else []
        if wf.preprocess:
            try:
                data = load_hook(wf.preprocess, str(wf.base_dir))(dict(data))
            except Exception as exc:  # noqa: BLE001 - the user's hook: its message, not a traceback
                return [f"{sample.path}: preprocess {wf.preprocess} failed on the first file: "
                        f"{type(exc).__name__}: {exc}"]
    try:
        bound = bind(data, info, req)
    except ValueError as exc:
        return [f"{sample.path}: {exc} (model {wf.model.name}, {config_path})"]
    problems = []
    tensors = {t.name: t for t in info.inputs}
    fields = dict(req.tensors or ())
    for name, array in bound.items():
        tensor, array = tensors[name], np.asarray(bound[name])
        source = fields.get(name, name if name in data else next(iter(data)))
        array = fit_shape(array, tensor)
        if not tensor.accepts(array.shape[1:]):
            problems.append(f"{sample.path}: field {source}: shape {list(array.shape[1:])}, but model input {name} "
                            f"takes {list(tensor.shape)} ({config_path})")
            continue
        _, bad = safe_cast(array, tensor)
        if bad:
            problems.append(f"{sample.path}: field {source}: {array.dtype} values do not cast safely to model "
                            f"input {name} ({tensor.datatype}): {next(iter(bad.values()))}")
    return problems
