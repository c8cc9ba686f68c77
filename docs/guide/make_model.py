"""Make the guide's example: a toy boosted-jet tagger exported to ONNX, and jets to classify.

It stands for "your model": a small network trained elsewhere and saved as ONNX. The jets are
simulated here (no download): five features per jet, three classes (QCD, W, top). The network is
trained with scikit-learn, then written with the `onnx` helper API, layer by layer from the trained
weights, so the file holds plain MatMul/Add/Relu/Softmax nodes any ONNX runtime (and Triton's
onnxruntime backend) executes. Writes:

  model.onnx         input FEATURES [batch, 5] float32 -> output PROBABILITIES [batch, 3] float32
  labels.txt         the class names, in the order of the model's outputs
  data/<class>/jets.npy   held-out jets, one file per class as simulated samples come: a float32
                          array with one row of 5 features per jet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.neural_network import MLPClassifier

CLASSES = ["QCD", "W", "top"]
FEATURES = ["mass_GeV", "pt_GeV", "tau21", "tau32", "n_constituents"]


def simulate(n: int, label: str, rng: np.random.Generator) -> np.ndarray:
    """n jets of one class: jet mass, pT, N-subjettiness ratios tau21 and tau32, constituent count.
    A cartoon of real jet substructure: W jets peak at 80 GeV with two prongs (low tau21), top jets
    at 173 GeV with three prongs (low tau32), QCD jets have a falling mass and one prong."""
    pt = 400.0 + rng.exponential(150.0, n)
    if label == "W":
        mass = rng.normal(80.4, 8.0, n)
        tau21, tau32, ncon = rng.beta(2, 4, n), rng.beta(5, 3, n), rng.poisson(28, n)
    elif label == "top":
        mass = rng.normal(172.5, 14.0, n)
        tau21, tau32, ncon = rng.beta(4, 4, n), rng.beta(2.5, 4, n), rng.poisson(45, n)
    else:
        mass = 10.0 + rng.gamma(2.0, 25.0, n)
        tau21, tau32, ncon = rng.beta(5, 3, n), rng.beta(6, 2.5, n), rng.poisson(35, n)
    return np.stack([mass, pt, tau21, tau32, ncon], axis=1).astype(np.float32)


def to_onnx(mean: np.ndarray, scale: np.ndarray, clf: MLPClassifier) -> onnx.ModelProto:
    """The trained network as an ONNX graph: standardize, then Dense+ReLU layers, then Softmax."""
    inits = [numpy_helper.from_array(mean.astype(np.float32), "mean"),
             numpy_helper.from_array(scale.astype(np.float32), "scale")]
    nodes = [helper.make_node("Sub", ["FEATURES", "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "scale"], ["x0"])]
    x = "x0"
    last = len(clf.coefs_) - 1
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"])]
        x = f"z{i}"
        if i < last:
            nodes.append(helper.make_node("Relu", [x], [f"h{i}"]))
            x = f"h{i}"
    nodes.append(helper.make_node("Softmax", [x], ["PROBABILITIES"], axis=1))
    graph = helper.make_graph(
        nodes, "wtag",
        [helper.make_tensor_value_info("FEATURES", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        [helper.make_tensor_value_info("PROBABILITIES", TensorProto.FLOAT, ["batch", len(CLASSES)])],
        initializer=inits,
    )
    # opset 13 and IR version 8: old enough for the onnxruntime of any recent Triton image
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="make_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="training jets per class")
    parser.add_argument("--jets", type=int, default=100, help="held-out jets per class written to data/")
    args = parser.parse_args()
    rng = np.random.default_rng(2023)

    x = np.concatenate([simulate(args.train, c, rng) for c in CLASSES])
    y = np.repeat(np.arange(len(CLASSES)), args.train)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    clf = MLPClassifier(hidden_layer_sizes=(16, 16), max_iter=400, random_state=0)
    clf.fit((x - mean) / scale, y)

    model = to_onnx(mean, scale, clf)
    onnx.save(model, "model.onnx")
    Path("labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))

    # check the export: onnxruntime on the ONNX file must agree with scikit-learn
    test_x = np.concatenate([simulate(args.jets, c, rng) for c in CLASSES])
    test_y = np.repeat(np.arange(len(CLASSES)), args.jets)
    session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    (probs,) = session.run(["PROBABILITIES"], {"FEATURES": test_x})
    assert np.allclose(probs, clf.predict_proba((test_x - mean) / scale), atol=1e-4), "ONNX export disagrees"

    for label, name in enumerate(CLASSES):
        path = Path("data") / name / "jets.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, test_x[test_y == label])
    accuracy = float((probs.argmax(axis=1) == test_y).mean())
    print(f"model.onnx: {len(FEATURES)} features -> {len(CLASSES)} classes ({', '.join(CLASSES)}); "
          f"ONNX and scikit-learn agree")
    print(f"data/*/jets.npy: {len(test_x)} held-out jets, {args.jets} per class; held-out accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
