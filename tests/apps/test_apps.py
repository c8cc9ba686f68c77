"""Users' own Parsl apps share the pilot with a campaign: 2,000 apps with their own preprocessing
calling the two-input tagger, beside a digits campaign, on one pilot (real Triton, real Parsl)."""

from __future__ import annotations

import numpy as np
import parsl
import pytest
from parsl import python_app
from parsl.config import Config

from dgaas_flow import Session, load_workflow, pilot_executor, run_campaign
from dgaas_flow.pilot.endpoint import read_registry
from dgaas_flow.sites import LocalProviderSpec
from tests.conftest import DIGITS

pytestmark = [pytest.mark.integration, pytest.mark.apps]


def tag_jets(seed: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, str]:
    """A user's app: make jets, preprocess them (keep the 10 leading particles, float64 as numpy
    gives), infer with the node's pilot."""
    import numpy as np

    from dgaas_flow import triton_client

    rng = np.random.default_rng(seed)
    points = rng.standard_normal((4, 16, 3))
    points[:, 10:] = 0.0
    features = rng.standard_normal((4, 4)).astype(np.float32)
    client = triton_client()
    probs = client.infer("jets", {"points": points, "features": features})["probs"]
    return seed, points, features, probs, str(client.url)


def digits_workflow(tmp_path, repo):
    text = (DIGITS / "workflow.yaml").read_text().replace("repository: model_repository", f"repository: {repo}")
    text = text.replace("files: data/images/*/*.png", f"files: {DIGITS}/data/images/*/*.png")
    path = tmp_path / "digits.yaml"
    path.write_text(text + f"outputs:\n  dir: {tmp_path / 'digits-run'}\n")
    return load_workflow(path)


def test_own_apps_and_a_campaign_share_one_pilot(tmp_path, two_models, jets):
    session = Session(provider="local", repository=two_models,
                      out=tmp_path / "session")
    with session:
        first = session.submit(tag_jets, 0)  # before the pilot is ready: the app waits for it
        assert not any(e.serving() for e in read_registry(session.registry))
        futures = [first] + [session.submit(tag_jets, seed) for seed in range(1, 2000)]
        summary = run_campaign(digits_workflow(tmp_path, two_models), session=session, progress="quiet")
        results = [f.result() for f in futures]
    assert summary["items_ok"] == 1797 and summary["items_failed"] == 0 and summary["accuracy"] > 0.95
    (pilot,) = read_registry(session.registry)  # one server for both models and all apps
    assert sorted(pilot.models) == [] and pilot.state == "stopped"  # it served the whole repository
    assert {url for *_, url in results} == {pilot.http_url}
    for seed, points, features, probs, _ in results:
        expected = jets.reference(points.astype(np.float32), features)
        np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6, err_msg=f"app {seed}")
    served = {t["endpoint"]: t["models"] for t in summary["triton"]}[pilot.http_url]
    assert set(served) == {"digits", "jets"}  # the campaign's figures name both models the pilot served


def test_pilot_executor_in_a_config_of_ones_own(tmp_path, two_models, jets):
    """pilot_executor beside a plain CPU executor: preprocessing on one, inference on the other."""
    from parsl.executors import ThreadPoolExecutor

    gpu = pilot_executor(LocalProviderSpec(kind="local", workers_per_node=1), repository=two_models,
                         models=["jets"], label="gpu", run_dir=tmp_path / "gpu")
    parsl.load(Config(executors=[gpu, ThreadPoolExecutor(label="cpu", max_threads=2)], run_dir=str(tmp_path / "p")))
    try:
        @python_app(executors=["cpu"])
        def preprocess(seed: int) -> dict:
            rng = np.random.default_rng(seed)
            return {"points": rng.standard_normal((8, 16, 3)).astype(np.float32),
                    "features": rng.standard_normal((8, 4)).astype(np.float32)}

        @python_app(executors=["gpu"])
        def infer(batch: dict) -> tuple[dict, np.ndarray]:  # not `inputs`: Parsl reserves that name
            from dgaas_flow import triton_client

            return batch, triton_client().infer("jets", batch)["probs"]

        outputs = [infer(preprocess(seed)).result() for seed in range(5)]
    finally:
        parsl.dfk().cleanup()
        parsl.clear()
    for batch, probs in outputs:
        np.testing.assert_allclose(probs, jets.reference(batch["points"], batch["features"]), rtol=1e-4, atol=1e-6)
    (pilot,) = read_registry(tmp_path / "gpu" / "pilots")
    assert pilot.models == ["jets"]
