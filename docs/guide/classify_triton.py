"""Classify jets with the model served by a Triton server: the same script, now a client.

    python classify_triton.py data/*/jets.npy

Each file is an array of jets, one row of 5 features per jet. If a file sits in a folder named
after a class, the script also counts how often the prediction agrees with it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

BATCH = 100  # jets per call


def find_server(url: str | None) -> str:
    """host:port of the server's HTTP endpoint: --url, else what was published for this job, in
    dgaas-flow's order: DGAAS_TRITON_URL (a dgaas-flow pilot on this node), TRITON_ADDRESS (a
    GlideinWMS glidein that started Triton), DGAAS_ENDPOINT_FILE (`dgaas-flow pilot start`)."""
    url = url or os.environ.get("DGAAS_TRITON_URL") or os.environ.get("TRITON_ADDRESS")
    if not url and os.environ.get("DGAAS_ENDPOINT_FILE"):
        url = json.loads(Path(os.environ["DGAAS_ENDPOINT_FILE"]).read_text())["http_url"]
    if not url:
        raise SystemExit("no Triton server: give --url host:port, or export DGAAS_ENDPOINT_FILE")
    return url.removeprefix("http://")


def classify(jets: np.ndarray, args: argparse.Namespace) -> list[str]:
    """The predicted class of each jet."""
    client = httpclient.InferenceServerClient(find_server(args.url))
    predicted = []
    for start in range(0, len(jets), BATCH):
        batch = jets[start:start + BATCH]
        features = httpclient.InferInput("FEATURES", list(batch.shape), "FP32")
        features.set_data_from_numpy(batch)
        top1 = httpclient.InferRequestedOutput("PROBABILITIES", class_count=1)  # "score:index:label"
        result = client.infer(args.model, [features], outputs=[top1])
        predicted += [entry.decode().split(":", 2)[2] for entry in result.as_numpy("PROBABILITIES").ravel()]
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help=".npy files of jets, one row per jet")
    parser.add_argument("--model", default="wtag", help="the model's name on the server")
    parser.add_argument("--url", help="the server's HTTP host:port (default: found as above)")
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
