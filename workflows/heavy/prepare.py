"""Prepare the heavy example: build its ONNX model and write its input jets as `rows` .npy files.

The model is a jet tagger shaped like the ones physics analyses run, built with `onnx.helper` from
seeded random weights (nothing is downloaded or trained; its outputs are not physics): 16 jet-level
features in (the hls4ml LHC-jet data set's size), 5 classes out (g, q, W, Z, t). It is an ensemble
of 12 expert MLPs (16 -> 1024 -> 1024 -> 1024 -> 256 -> 5), one per (pT, |eta|) bin, as taggers
trained per kinematic bin are; inside the graph each jet is routed to its bin's expert. So the model
holds about 114 MB of float32 weights (a load that takes a realistic time: parse, graph
optimisation, memory) while one jet costs one expert's arithmetic (about 4.8 MFLOP).

    python workflows/heavy/prepare.py [--items 100000] [--out workflows/heavy/data/jets]

writes model_repository/heavy/1/model.onnx (if missing or --force) and `--items` jets as float32
arrays of shape (rows, 16), at most --rows-per-file rows per file (part-00000.npy, ...).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model_repository" / "heavy" / "1" / "model.onnx"
DATA = HERE / "data" / "jets"

FEATURES = 16
CLASSES = ("g", "q", "W", "Z", "t")
HIDDEN = (1024, 1024, 1024, 256)
# Bins of the standardized features 0 (log pT) and 1 (|eta|): pT quartiles x |eta| terciles.
PT_EDGES = (-0.674, 0.0, 0.674)
ETA_EDGES = (-0.431, 0.431)
EXPERTS = (len(PT_EDGES) + 1) * (len(ETA_EDGES) + 1)
SEED = 20231128
ROWS_PER_FILE = 10_000


def build_model(path: Path = MODEL, hidden: tuple[int, ...] = HIDDEN, seed: int = SEED) -> int:
    """Write the ONNX model; return its weight count."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    # bin = pt_bin * len(eta bins) + eta_bin, from thresholds on the standardized features
    pt = node("Gather", ["FEATURES", const("col0", np.array(0, np.int64))], "pt", axis=1)
    eta = node("Gather", ["FEATURES", const("col1", np.array(1, np.int64))], "eta", axis=1)

    def digitize(x: str, edges: tuple[float, ...], tag: str) -> str:
        above = node("Greater", [node("Unsqueeze", [x, const(f"{tag}_ax", np.array([1], np.int64))], f"{tag}_col"),
                                 const(f"{tag}_edges", np.array(edges, np.float32))], f"{tag}_above")
        ints = node("Cast", [above], f"{tag}_int", to=TensorProto.INT64)
        return node("ReduceSum", [ints, const(f"{tag}_sumax", np.array([1], np.int64))], f"{tag}_bin", keepdims=0)

    eta_bins = np.array(len(ETA_EDGES) + 1, np.int64)
    bin_ = node("Add", [node("Mul", [digitize(pt, PT_EDGES, "ptb"), const("n_eta", eta_bins)], "pt_off"),
                        digitize(eta, ETA_EDGES, "etab")], "bin")

    flat = const("flat", np.array([-1], np.int64))
    order, outputs, weights = [], [], 0
    dims = [FEATURES, *hidden, len(CLASSES)]
    for k in range(EXPERTS):
        rows = node("Reshape", [node("NonZero", [node("Equal", [bin_, const(f"k{k}", np.array(k, np.int64))],
                                                      f"is{k}")], f"nz{k}"), flat], f"rows{k}")
        x = node("Gather", ["FEATURES", rows], f"x{k}", axis=0)
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            w = (rng.standard_normal((a, b), dtype=np.float32) * np.float32(np.sqrt(2.0 / a))).astype(np.float32)
            bias = (rng.standard_normal(b, dtype=np.float32) * np.float32(0.01)).astype(np.float32)
            weights += w.size + bias.size
            x = node("Gemm", [x, const(f"e{k}_w{i}", w), const(f"e{k}_b{i}", bias)], f"e{k}_h{i}")
            if i < len(dims) - 2:
                x = node("Relu", [x], f"e{k}_r{i}")
        order.append(rows)
        outputs.append(x)
    # put every jet's logits back in its own row, then softmax
    index = node("Unsqueeze", [node("Concat", order, "order", axis=0), const("last", np.array([1], np.int64))],
                 "index")
    shape = node("Concat", [node("Shape", ["FEATURES"], "in_shape", end=1),
                            const("n_classes", np.array([len(CLASSES)], np.int64))], "out_shape", axis=0)
    zeros = node("ConstantOfShape", [shape], "zeros",
                 value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    logits = node("ScatterND", [zeros, index, node("Concat", outputs, "sorted_logits", axis=0)], "logits")
    nodes.append(helper.make_node("Softmax", [logits], ["PROBABILITIES"], name="softmax", axis=1))

    graph = helper.make_graph(
        nodes, "heavy", [helper.make_tensor_value_info("FEATURES", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("PROBABILITIES", TensorProto.FLOAT, ["N", len(CLASSES)])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dgaas-flow")
    model.ir_version = 8  # readable by older onnxruntime builds too
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(model, tmp)
    tmp.replace(path)
    return weights


def make_jets(n: int, start: int = 0, seed: int = SEED) -> np.ndarray:
    """n synthetic jets (standardized features, one class-dependent mean per jet), reproducible:
    jet i is the same whatever n and start are, as long as start is a multiple of ROWS_PER_FILE."""
    out = np.empty((n, FEATURES), np.float32)
    for lo in range(0, n, ROWS_PER_FILE):
        block = (start + lo) // ROWS_PER_FILE
        rng = np.random.default_rng([seed, block])
        m = min(ROWS_PER_FILE, n - lo)
        cls = rng.integers(0, len(CLASSES), m)
        means = np.random.default_rng(seed).normal(0.0, 0.6, (len(CLASSES), FEATURES)).astype(np.float32)
        means[:, :2] = 0.0  # pT and |eta| spread over every bin
        out[lo:lo + m] = means[cls] + rng.standard_normal((m, FEATURES), dtype=np.float32)
    return out


def write_rows(out: Path, n: int, rows_per_file: int = ROWS_PER_FILE, make=make_jets) -> list[Path]:
    """Write n items as part-NNNNN.npy files of rows_per_file rows (the last may be shorter), or,
    where `make` gives named arrays, part-NNNNN.npz files of them; files already there with the
    right count are kept, extra ones removed."""
    if rows_per_file % ROWS_PER_FILE and make is make_jets:
        raise ValueError(f"rows_per_file must be a multiple of {ROWS_PER_FILE}")
    out.mkdir(parents=True, exist_ok=True)
    named = isinstance(make(1, 0), dict)  # rows of one array, or named arrays
    paths: list[Path] = []
    for i, lo in enumerate(range(0, n, rows_per_file)):
        m = min(rows_per_file, n - lo)
        path = out / f"part-{i:05d}{'.npz' if named else '.npy'}"
        paths.append(path)
        if path.exists() and _count(path) == m:
            continue
        tmp = path.with_suffix(f".tmp{path.suffix}")
        data = make(m, lo)
        if named:
            np.savez(tmp, **data)
        else:
            np.save(tmp, data)
        tmp.replace(path)
    for stale in {*out.glob("part-*.npy"), *out.glob("part-*.npz")} - set(paths):
        stale.unlink()
    return paths


def _count(path: Path) -> int | None:
    """Items in a part file (the first array's, for .npz), or None if it cannot be read."""
    try:
        if path.suffix == ".npz":
            with np.load(path) as f:
                return len(f[f.files[0]])
        return int(np.load(path, mmap_mode="r").shape[0])
    except (ValueError, OSError, IndexError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="jets to write (default 100000)")
    parser.add_argument("--out", type=Path, default=DATA, help="folder for part-*.npy")
    parser.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE)
    parser.add_argument("--force", action="store_true", help="rebuild the model even if it exists")
    args = parser.parse_args()
    if args.force or not MODEL.exists():
        t0 = time.perf_counter()
        weights = build_model()
        print(f"heavy: model {MODEL.relative_to(HERE)}: {EXPERTS} experts, {weights / 1e6:.1f} M weights "
              f"({MODEL.stat().st_size / 1e6:.0f} MB), built in {time.perf_counter() - t0:.1f} s")
    paths = write_rows(args.out, args.items, args.rows_per_file)
    print(f"heavy: {args.items} jets in {len(paths)} files under {args.out}")


if __name__ == "__main__":
    main()
