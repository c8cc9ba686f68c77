"""Prepare the digits example: train the classifier and write the input images.

Everything comes from scikit-learn's bundled digits data set (1,797 8x8 images), so nothing is
downloaded. The model is trained on the exact pixels the server will see (8-bit PNG values), on a
fixed split, so its held-out accuracy through Triton can be checked against `heldout.txt`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "model_repository" / "digits" / "1" / "weights.npz"


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Digits are 0..16 intensities; store them as the 8-bit grey levels an image file holds."""
    return np.clip(np.rint(images * 255.0 / 16.0), 0, 255).astype(np.uint8)


def train(pixels: np.ndarray, labels: np.ndarray, train_idx: np.ndarray) -> float:
    x = pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=0)
    clf.fit(x[train_idx], labels[train_idx])
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        WEIGHTS,
        w1=clf.coefs_[0].astype(np.float32),
        b1=clf.intercepts_[0].astype(np.float32),
        w2=clf.coefs_[1].astype(np.float32),
        b2=clf.intercepts_[1].astype(np.float32),
    )
    return clf


def write_images(pixels: np.ndarray, labels: np.ndarray, out: Path) -> None:
    for i, (img, label) in enumerate(zip(pixels, labels, strict=True)):
        path = out / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data", help="where the images go")
    args = parser.parse_args()

    digits = load_digits()
    pixels, labels = to_pixels(digits.images), digits.target
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, random_state=0, stratify=labels
    )
    clf = train(pixels, labels, train_idx)
    x = pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0
    heldout_acc = clf.score(x[test_idx], labels[test_idx])

    images = args.out / "images"
    write_images(pixels, labels, images)
    (args.out / "heldout.txt").write_text(
        "".join(f"{labels[i]}/{i:04d}.png\n" for i in sorted(test_idx))
    )
    print(f"digits: {len(labels)} images in {images}, weights in {WEIGHTS.relative_to(HERE)}, "
          f"held-out accuracy {heldout_acc:.3f} ({len(test_idx)} images)")


if __name__ == "__main__":
    main()
