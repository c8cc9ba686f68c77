"""Bad data never sinks others and never multiplies: each case ends as the one record it should."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dgaas_flow.apps.client import ModelInfo, TensorInfo, fit_shape
from dgaas_flow.apps.tasks import InferRequest, bind, model_pixels, safe_cast
from dgaas_flow.campaign.records import ChunkRecords, quote
from dgaas_flow.campaign.sink import ResultsFile
from dgaas_flow.inputs import ChunkReader, enumerate_slices, quoted_ids, slices

pytestmark = pytest.mark.readers

U8 = TensorInfo("IMAGE", "UINT8", (8, 8))
F32 = TensorInfo("x", "FP32", (3,))


@pytest.mark.parametrize(("array", "tensor", "why"), [
    (np.full((1, 8, 8), 1e10), U8, "outside UINT8's range"),
    (np.full((1, 8, 8), -1, np.int64), U8, "outside UINT8's range"),
    (np.full((1, 8, 8), 300, np.int64), U8, "outside UINT8's range"),
    (np.full((1, 8, 8), 300, np.uint16), U8, "outside UINT8's range"),  # a 16-bit PNG's values
    (np.full((1, 8, 8), 0.5), U8, "fractional values"),
    (np.full((1, 8, 8), np.nan, np.float32), U8, "NaN or infinite"),
    (np.full((1, 3), np.nan, np.float32), F32, "NaN or infinite"),
    (np.full((1, 3), np.inf), F32, "NaN or infinite"),
    (np.full((1, 3), 1e300), F32, "beyond FP32's range"),
    (np.full((1, 3), 1 + 2j), F32, "complex values"),
    (np.array([["a", "b", "c"]]), F32, "<U1 values cannot be converted to FP32"),
])
def test_values_that_do_not_fit_the_models_type_are_the_items_error(array, tensor, why):
    _, bad = safe_cast(array, tensor)
    assert list(bad) == [0] and why in bad[0]


def test_only_the_bad_rows_fail_and_the_others_are_converted_exactly():
    rows = np.array([[1, 2, 3], [1, np.nan, 3], [4, 5, 6], [1e300, 0, 0]])
    cast, bad = safe_cast(rows, F32)
    assert sorted(bad) == [1, 3] and cast.dtype == np.float32
    assert cast[[0, 2]].tolist() == [[1, 2, 3], [4, 5, 6]]
    fits = np.array([[0, 255, 7]], dtype=np.int64)
    cast, bad = safe_cast(fits, TensorInfo("u", "UINT8", (3,)))
    assert not bad and cast.dtype == np.uint8 and cast.tolist() == [[0, 255, 7]]
    same, bad = safe_cast(np.zeros((2, 8, 8), np.uint8), U8)
    assert not bad and same.dtype == np.uint8


def test_rows_of_the_models_float_type_are_checked_for_nan_only():
    """Already FP32: NaN or infinity is a row's error, and large finite values whose sum overflows
    are not (the whole-array sum that clears the usual case is only a first look)."""
    rows = np.array([[1, 2, 3], [-np.inf, 0, 0], [3e38, 3e38, 3e38], [0, 0, np.nan]], np.float32)
    same, bad = safe_cast(rows, F32)
    assert same is rows and sorted(bad) == [1, 3] and all("NaN or infinite" in why for why in bad.values())
    big = np.full((4, 3), 3e38, np.float32)
    same, bad = safe_cast(big, F32)
    assert same is big and not bad


def test_named_arrays_map_onto_the_models_inputs():
    two = ModelInfo((TensorInfo("points", "FP32", (16, 3)), TensorInfo("features", "FP32", (4,))),
                    (TensorInfo("probs", "FP32", (3,)),), 8)
    data = {"points": np.zeros((2, 16, 3)), "features": np.zeros((2, 4)), "extra": np.zeros(2)}
    assert set(bind(data, two, InferRequest(model="jets"))) == {"points", "features"}  # by name
    renamed = {"p": data["points"], "f": data["features"]}
    req = InferRequest(model="jets", tensors=(("points", "p"), ("features", "f")))
    assert bind(renamed, two, req)["points"] is renamed["p"]
    with pytest.raises(ValueError, match="no field 'points' for model input points"):
        bind(renamed, two, InferRequest(model="jets"))
    with pytest.raises(ValueError, match=r"model input \['features'\] has no source"):
        bind(renamed, two, InferRequest(model="jets", tensors=(("points", "p"),)))
    one = ModelInfo((U8,), (TensorInfo("P", "FP32", (10,)),), 8)
    assert list(bind({"image": np.zeros((1, 8, 8))}, one, InferRequest(model="d"))) == ["IMAGE"]  # as today


def test_a_grey_image_gets_the_channel_axis_of_an_nchw_model_and_its_pixels_bound_the_header():
    nchw = TensorInfo("IMAGE", "UINT8", (1, 8, 8))
    assert fit_shape(np.zeros((2, 8, 8)), nchw).shape == (2, 1, 8, 8)
    assert fit_shape(np.zeros((2, 8, 7)), nchw).shape == (2, 8, 7)  # left to the shape check
    assert model_pixels(ModelInfo((nchw,), (), 8)) == 64
    assert model_pixels(ModelInfo((TensorInfo("x", "FP32", (-1, -1, 3)),), (), 8)) is None


def test_huge_and_palette_images_are_refused_before_decoding(tmp_path):
    from PIL import Image

    Image.new("L", (9000, 9000)).save(tmp_path / "huge.png")
    Image.new("P", (8, 8)).save(tmp_path / "palette.png")
    reader = ChunkReader("image")
    reader.reader.model_pixels = 64
    huge = reader.read(str(tmp_path / "huge.png"), None, 1)
    assert isinstance(huge, ValueError) and "9000x9000" in str(huge)
    palette = reader.read(str(tmp_path / "palette.png"), None, 1)
    assert isinstance(palette, ValueError) and "palette" in str(palette)
    converted = ChunkReader({"format": "image", "files": "", "mode": "L"}).read(str(tmp_path / "palette.png"),
                                                                                None, 1)
    assert converted["image"].shape == (1, 8, 8)


def _ids(pattern: str, fmt: str = "npy") -> dict[str, str | None]:
    return {r.rel: r.problem for r in enumerate_slices(pattern, fmt)}


def test_fifos_dangling_links_and_unreadable_folders_each_become_one_record(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.zeros(2))
    os.mkfifo(tmp_path / "pipe.npy")
    os.symlink(tmp_path / "gone.npy", tmp_path / "dangling.npy")
    (tmp_path / "locked").mkdir()
    np.save(tmp_path / "locked" / "b.npy", np.zeros(2))
    real = slices._entries
    monkeypatch.setattr(slices, "_entries", lambda d: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if d.endswith("locked") else real(d))  # root reads any folder: refuse it here
    found = _ids(str(tmp_path / "**" / "*.npy"))
    assert found == {"a.npy": None, "pipe.npy": "not a regular file (FIFO)", "dangling.npy": "dangling link",
                     "locked": "cannot list folder: Permission denied"}
    # the task never opens a FIFO (it would block): the slice's problem is its record
    assert isinstance(ChunkReader("npy").read(str(tmp_path / "pipe.npy"), None, 1), ValueError)


def test_folder_links_are_followed_once_not_into_loops(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/1.npy", "d/e/2.npy", "3.npy"):
        np.save(tmp_path / name, np.zeros(1))
    os.symlink(tmp_path, tmp_path / "d" / "e" / "loop")  # d/e/loop -> the root: a cycle
    os.symlink(tmp_path / "d", tmp_path / "alias")  # a second way into d
    found = _ids(str(tmp_path / "**" / "*.npy"))
    assert len(found) == 3
    assert {os.path.basename(k) for k in found} == {"1.npy", "2.npy", "3.npy"}


def test_ids_of_names_that_are_not_utf8_survive_a_resume(tmp_path):
    name = os.fsdecode(b"caf\xe9-\xff.npy")  # Latin-1 bytes: surrogates in Python's str
    np.save(os.path.join(tmp_path, name), np.zeros(3))
    (run,) = list(enumerate_slices(str(tmp_path / "*.npy"), "rows"))
    chunk = ChunkRecords(quoted_ids([run]), [None] * 3)
    chunk.succeed([0, 1], np.eye(2, dtype=np.float32), 1, ["a", "b"], None, None, 1.0)
    chunk.fail([2], "x: y", None)
    path = tmp_path / "results.jsonl"
    results = ResultsFile(path)
    results.append(chunk.outcome([1.0]))
    results.close()
    again = ResultsFile(path)  # the rerun: it resumed before this fix with a UnicodeEncodeError
    again.close()
    assert len(again.done) == 2 and f"{name}:0" in again.done and f"{name}:2" not in again.done
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [f"{name}:0", f"{name}:1"]
    assert json.loads(json.dumps(run.fields()))[0] == run.path  # the path travels to the task intact
    assert quote([name])[0].isascii()
