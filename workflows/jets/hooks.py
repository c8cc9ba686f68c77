"""The jets workflow's hooks: plain functions of named arrays, run in the workers.

`pack` (the workflow's `preprocess`) turns what the ROOT reader gives (jagged constituents padded to
16 with a `mask`, and the jet's features) into the tagger's two inputs. `flavour_columns` (an example
`postprocess`) adds each flavour's probability and the number of real constituents as columns."""

from __future__ import annotations

import numpy as np


def pack(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    points = np.stack([batch["part_pt"], batch["part_eta"], batch["part_phi"]], axis=-1)
    points = np.where(batch["mask"][..., None], points, 0).astype(np.float32)
    return {"points": points, "features": batch["jet_features"].astype(np.float32)}


def flavour_columns(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    probs = outputs["probs"]
    constituents = (np.abs(inputs["points"]).sum(axis=2) > 0).sum(axis=1)
    return {"p_light": probs[:, 0], "p_c": probs[:, 1], "p_b": probs[:, 2], "constituents": constituents}
