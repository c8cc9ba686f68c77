"""Every reader against real files written by the real libraries: count from the header, read a
slice as named arrays; the spec union checks each format's own fields; a plugin reader by name."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from pydantic import ValidationError

from dgaas_flow import inputs
from dgaas_flow.inputs import ChunkReader, enumerate_slices, input_spec

pytestmark = pytest.mark.readers

N = 25


def jets(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"points": rng.standard_normal((n, 16, 3)).astype(np.float32),
            "features": rng.standard_normal((n, 4)).astype(np.float32)}


def check_slices(pattern: str, spec: dict, expected: dict[str, np.ndarray], per_file: int) -> None:
    runs = list(enumerate_slices(pattern, {"files": pattern, **spec}))
    assert [(r.start, r.count) for r in runs] == [(0, per_file)] * len(runs)
    reader = ChunkReader({"files": pattern, **spec})
    block = reader.read(runs[0].path, 3, 5)
    assert not isinstance(block, Exception), block
    assert set(block) == set(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(block[name], array[3:8])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_fields_are_the_arrays(tmp_path, save):
    """Stored members (np.savez) are memory-mapped in place, compressed ones read whole: the same rows."""
    data = jets()
    save(tmp_path / "a.npz", **data)
    check_slices(str(tmp_path / "*.npz"), {"format": "npz"}, data, N)
    only = ChunkReader({"format": "npz", "files": "", "fields": ["features"]}).read(str(tmp_path / "a.npz"), 0, 2)
    assert list(only) == ["features"]
    np.testing.assert_array_equal(only["features"], data["features"][:2])


def test_npz_members_of_any_layout_read_by_row(tmp_path):
    """Fortran order, a zip64 member written by numpy, an array whose name holds a folder, and one
    of no values (nothing to map: read as numpy reads it)."""
    points = np.asfortranarray(np.arange(N * 6, dtype=np.float64).reshape(N, 6))
    np.savez(tmp_path / "a.npz", **{"points": points, "jet/pt": np.arange(N, dtype=np.int16),
                                    "none": np.zeros((N, 0), dtype=np.float32)})
    block = ChunkReader({"format": "npz", "files": ""}).read(str(tmp_path / "a.npz"), 4, 3)
    np.testing.assert_array_equal(block["points"], points[4:7])
    np.testing.assert_array_equal(block["jet/pt"], [4, 5, 6])
    assert block["none"].shape == (3, 0)


def test_a_broken_npz_is_its_items_error(tmp_path):
    np.savez(tmp_path / "a.npz", points=np.zeros((N, 3), dtype=np.float32))
    raw = bytearray((tmp_path / "a.npz").read_bytes())
    raw[0:4] = b"XXXX"  # the first member's local header
    (tmp_path / "a.npz").write_bytes(bytes(raw))
    error = ChunkReader({"format": "npz", "files": ""}).read(str(tmp_path / "a.npz"), 0, 2)
    assert isinstance(error, zipfile.BadZipFile) and "points.npy" in str(error)


def test_parquet_columns_with_fixed_length_lists_become_axes(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data = jets()
    table = pa.table({"points": pa.array(list(data["points"].reshape(N, -1))),
                      "features": pa.FixedSizeListArray.from_arrays(pa.array(data["features"].ravel()), 4),
                      "weight": pa.array(np.arange(N, dtype=np.float64))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=7)  # a slice spans row groups
    expected = {"points": data["points"].reshape(N, -1), "features": data["features"],
                "weight": np.arange(N, dtype=np.float64)}
    check_slices(str(tmp_path / "*.parquet"), {"format": "parquet"}, expected, N)
    cols = ChunkReader({"format": "parquet", "files": "", "columns": ["weight"]}).read(
        str(tmp_path / "a.parquet"), 20, 5)
    assert list(cols) == ["weight"] and cols["weight"].tolist() == [20, 21, 22, 23, 24]


def test_hdf5_datasets_of_a_group(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = jets()
    with h5py.File(tmp_path / "a.h5", "w") as f:
        g = f.create_group("jets")
        for k, v in data.items():
            g.create_dataset(k, data=v)
        f.create_dataset("other", data=np.zeros(3))
    check_slices(str(tmp_path / "*.h5"), {"format": "hdf5", "group": "jets"}, data, N)
    named = ChunkReader({"format": "hdf5", "files": "", "datasets": ["jets/points"]}).read(str(tmp_path / "a.h5"), 0, 2)
    assert list(named) == ["jets/points"]


def write_root(path, n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    uproot = pytest.importorskip("uproot")
    ak = pytest.importorskip("awkward")
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 20, n)  # some jets have more constituents than the model takes
    pt = ak.unflatten(rng.random(counts.sum()).astype(np.float32), counts)
    features = rng.standard_normal((n, 4)).astype(np.float32)
    with uproot.recreate(path) as f:
        f["Events"] = {"part_pt": pt, "jet_features": features, "jet_id": np.arange(n, dtype=np.int64)}
    return {"counts": counts, "pt": pt, "features": features}


def test_root_fixed_and_jagged_branches_padded_with_a_mask(tmp_path):
    ak = pytest.importorskip("awkward")
    made = write_root(tmp_path / "a.root")
    spec = {"format": "root", "files": str(tmp_path / "*.root"), "tree": "Events", "jagged_length": 16}
    runs = list(enumerate_slices(spec["files"], spec))
    assert [(r.start, r.count) for r in runs] == [(0, N)]
    block = ChunkReader(spec).read(str(tmp_path / "a.root"), 3, 5)
    assert not isinstance(block, Exception), block
    assert set(block) == {"part_pt", "jet_features", "jet_id", "mask"}
    assert block["part_pt"].shape == (5, 16) and block["mask"].shape == (5, 16)
    np.testing.assert_array_equal(block["jet_features"], made["features"][3:8])
    for k in range(5):
        real = ak.to_numpy(made["pt"][3 + k])[:16]
        np.testing.assert_array_equal(block["part_pt"][k, : len(real)], real)
        assert not block["part_pt"][k, len(real):].any()
        assert block["mask"][k].sum() == min(made["counts"][3 + k], 16)
    no_pad = ChunkReader({**spec, "jagged_length": None}).read(str(tmp_path / "a.root"), 0, 2)
    assert isinstance(no_pad, ValueError) and "jagged_length" in str(no_pad)
    wrong_tree = ChunkReader({**spec, "tree": "Nope"}).read(str(tmp_path / "a.root"), 0, 2)
    assert isinstance(wrong_tree, KeyError) and "Events" in str(wrong_tree)


def test_single_array_formats_name_their_field(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", np.ones((2, 3)))
    assert list(ChunkReader("image").read(str(tmp_path / "a.png"), None, 1)) == ["image"]
    assert list(ChunkReader("npy").read(str(tmp_path / "a.npy"), None, 1)) == ["array"]
    assert list(ChunkReader("rows").read(str(tmp_path / "a.npy"), 0, 2)) == ["array"]


def test_each_format_has_its_own_fields():
    assert input_spec({"format": "root", "files": "x", "tree": "T"}).tree == "T"
    with pytest.raises(ValidationError, match="tree"):
        input_spec({"format": "parquet", "files": "x", "tree": "T"})
    with pytest.raises(ValidationError, match="tree"):
        input_spec({"format": "root", "files": "x"})  # required for ROOT
    with pytest.raises(ValidationError, match="unknown format 'csv'"):
        input_spec({"format": "csv", "files": "x"})
    assert input_spec({"files": "x"}).format == "image"  # the default stays


class TextReader:
    """A reader another package could ship: one item per line of a text file, field `line`."""

    rows = True

    def __init__(self, width: int = 4):
        self.width = width

    def count(self, path: str) -> int | None:
        with open(path) as f:
            return sum(1 for _ in f)

    def read(self, path: str, start, stop) -> dict[str, np.ndarray]:
        with open(path) as f:
            lines = f.read().splitlines()[start:stop]
        return {"line": np.array([[len(x)] * self.width for x in lines], dtype=np.float32)}


def test_a_plugin_reader_plugs_in_by_module_and_class(tmp_path):
    (tmp_path / "a.txt").write_text("a\nbb\nccc\n")
    spec = {"format": f"{__name__}:TextReader", "files": str(tmp_path / "*.txt"), "options": {"width": 2}}
    runs = list(enumerate_slices(spec["files"], spec))
    assert [(r.start, r.count) for r in runs] == [(0, 3)]
    assert ChunkReader(spec).read(str(tmp_path / "a.txt"), 1, 2)["line"].tolist() == [[2, 2], [3, 3]]
    with pytest.raises(ValidationError, match="cannot load reader"):
        input_spec({"format": "no_such_module:Reader", "files": "x"})
    assert inputs.plugin_class(f"{__name__}:TextReader") is TextReader
