"""Classify jets with the ONNX model on this machine: the script you start from.

    python classify_local.py data/*/jets.npy

Each file is an array of jets, one row of 5 features per jet. If a file sits in a folder named
after a class, the script also counts how often the prediction agrees with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort

BATCH = 100  # jets per call


def classify(jets: np.ndarray, args: argparse.Namespace) -> list[str]:
    """The predicted class of each jet."""
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    labels = Path(args.labels).read_text().split()
    predicted = []
    for start in range(0, len(jets), BATCH):
        (probs,) = session.run(["PROBABILITIES"], {"FEATURES": jets[start:start + BATCH]})
        predicted += [labels[i] for i in probs.argmax(axis=1)]
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help=".npy files of jets, one row per jet")
    parser.add_argument("--model", default="model.onnx")
    parser.add_argument("--labels", default="labels.txt")
    args = parser.parse_args()

    arrays, truth = [], []
    for f in args.files:
        arrays.append(np.load(f))
        truth += [f.parent.name] * len(arrays[-1])  # the folder's name: the true class of its jets
    jets = np.concatenate(arrays).astype(np.float32)
    predicted = classify(jets, args)
    right = sum(p == t for p, t in zip(predicted, truth, strict=True))
    counts = {c: predicted.count(c) for c in sorted(set(predicted))}
    print(f"{len(jets)} jets: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    print(f"agrees with the folder name for {right} of {len(jets)} ({right / len(jets):.3f})")


if __name__ == "__main__":
    main()
