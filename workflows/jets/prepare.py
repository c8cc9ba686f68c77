"""Prepare the jets example: build its two-input tagger (ONNX) and write jets to tag.

The tagger takes what jet taggers take: a jet's constituents (`points`: 16 particles of
(pT, eta, phi), zero-padded) and jet-level `features` (4 values), and gives the probabilities of
three flavours (light, c, b). It is built with `onnx.helper` from seeded weights (nothing is
downloaded or trained; its outputs are not physics): the mean of the constituents, joined to the
features, through a 7 -> 32 -> 3 MLP and a softmax. `reference` computes the same in numpy, so
tests can check every output the server gives.

    python workflows/jets/prepare.py [--jets 20000] [--files 20]

writes model_repository/jets/1/model.onnx, --files ROOT files of jets under data/root/ (tree
`Events`: jagged branches `part_pt`, `part_eta`, `part_phi` with each jet's real constituents only,
and the fixed-size branch `jet_features`), written with uproot, and the same jets as .npz files
(arrays `points` and `features`, zero-padded) under data/npz/. The workflow reads the ROOT files;
its `preprocess` hook (hooks.py) packs the padded constituents into the model's `points`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model_repository" / "jets" / "1" / "model.onnx"
DATA = HERE / "data" / "npz"
PARTICLES, COORDS, FEATURES, HIDDEN = 16, 3, 4, 32
FLAVOURS = ("light", "c", "b")
SEED = 20261202


def weights(seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inner = COORDS + FEATURES
    return {"w1": rng.standard_normal((inner, HIDDEN)).astype(np.float32) / np.float32(np.sqrt(inner)),
            "b1": rng.standard_normal(HIDDEN).astype(np.float32) * np.float32(0.1),
            "w2": rng.standard_normal((HIDDEN, len(FLAVOURS))).astype(np.float32) / np.float32(np.sqrt(HIDDEN)),
            "b2": rng.standard_normal(len(FLAVOURS)).astype(np.float32) * np.float32(0.1)}


def reference(points: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The tagger in numpy: what the server must answer, to float32 rounding."""
    w = weights()
    x = np.concatenate([points.mean(axis=1), features], axis=1).astype(np.float32)
    logits = np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def build_model(path: Path = MODEL) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = weights()
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "particle_axis"))
    nodes = [
        helper.make_node("ReduceMean", ["points", "particle_axis"], ["mean"], keepdims=0),
        helper.make_node("Concat", ["mean", "features"], ["joined"], axis=1),
        helper.make_node("Gemm", ["joined", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "jets",
        [helper.make_tensor_value_info("points", TensorProto.FLOAT, ["N", PARTICLES, COORDS]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(FLAVOURS)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="dgaas-flow")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def make_jets(n: int, seed: int) -> dict[str, np.ndarray]:
    """n jets: constituents with a jet-dependent count (the rest zero-padded) and features."""
    rng = np.random.default_rng(seed)
    points = rng.standard_normal((n, PARTICLES, COORDS)).astype(np.float32)
    counts = rng.integers(2, PARTICLES + 1, n)
    points[np.arange(PARTICLES)[None, :] >= counts[:, None]] = 0.0
    return {"points": points, "features": rng.standard_normal((n, FEATURES)).astype(np.float32)}


def write_npz(out: Path, jets: int, files: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, lo in enumerate(range(0, jets, -(-jets // files))):
        path = out / f"jets_{i:02d}.npz"
        np.savez(path, **make_jets(min(-(-jets // files), jets - lo), SEED + i))
        paths.append(path)
    return paths


def write_root(out: Path, jets: int, files: int) -> list[Path]:
    """The same jets as `write_npz`, as a physics file holds them: constituents as jagged branches."""
    import awkward as ak
    import uproot

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, lo in enumerate(range(0, jets, -(-jets // files))):
        made = make_jets(min(-(-jets // files), jets - lo), SEED + i)
        points = made["points"]
        counts = (np.abs(points).sum(axis=2) > 0).sum(axis=1)  # zero-padded: the real ones come first
        real = np.arange(PARTICLES)[None, :] < counts[:, None]
        branches = {f"part_{c}": ak.unflatten(points[..., k][real], counts) for k, c in enumerate(("pt", "eta",
                                                                                                     "phi"))}
        path = out / f"jets_{i:02d}.root"
        with uproot.recreate(path) as f:
            f["Events"] = {**branches, "jet_features": made["features"]}
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=20_000, help="jets to write (default 20000)")
    parser.add_argument("--files", type=int, default=20, help="files to spread them over (default 20)")
    args = parser.parse_args()
    build_model()
    paths = write_npz(DATA, args.jets, args.files)
    roots = write_root(HERE / "data" / "root", args.jets, args.files)
    print(f"jets: model {MODEL.relative_to(HERE)}; {args.jets} jets in {len(roots)} ROOT files under "
          f"{roots[0].parent} and {len(paths)} .npz files under {DATA}")


if __name__ == "__main__":
    main()
