"""The memory bound of a worker: eight huge images (9000 x 9000 RGB PNG, 243 MB each when decoded,
1.9 GB for the eight) in one chunk leave the worker process's peak RSS under WORKER_RSS_BOUND_MB.
The task reads one request's items at a time, and an image whose header says it is larger than the
model's input could take is refused before it is decoded."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from dgaas_flow.campaign import run_campaign
from dgaas_flow.specs import load_workflow
from tests.conftest import WORKFLOW, copy_workflow

pytestmark = pytest.mark.integration

WORKER_RSS_BOUND_MB = 200  # measured about 80 MB; one decoded image alone would be 243 MB more

HOOK = '''
import resource

def peak_rss(inputs, outputs):
    """The worker process's peak RSS so far, in MB, for each item of the request."""
    mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {"worker_peak_rss_mb": [mb] * len(outputs["PROBABILITIES"])}
'''


def test_eight_huge_images_in_one_chunk_keep_the_workers_peak_rss_bounded(tmp_path, digits_data):
    images = tmp_path / "images" / "3"
    images.mkdir(parents=True)
    Image.new("RGB", (9000, 9000)).save(images / "huge-0.png")  # about 240 kB of compressed zeros
    for k in range(1, 8):
        shutil.copy(images / "huge-0.png", images / f"huge-{k}.png")
    small = sorted((digits_data / "images" / "3").glob("*.png"))[0]
    shutil.copy(small, images / "a-small.png")  # first: what `run` checks the model against before it starts
    shutil.copy(small, images / "zz-small.png")  # last: its request's hook reports the peak after the huge ones
    text = (WORKFLOW.read_text().replace("provider: local", "provider: {kind: local, workers_per_node: 1}")
            .replace("chunk_size: auto", "chunk_size: 16") + "postprocess: hooks:peak_rss\n")
    path = copy_workflow(tmp_path / "wf", text, tmp_path / "images")
    (path.parent / "hooks.py").write_text(HOOK)
    summary = run_campaign(load_workflow(path), out=tmp_path / "run", progress="quiet")

    records = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())}
    assert (summary["items_ok"], summary["items_failed"]) == (2, 8) and len(records) == 10
    assert all("image is 9000x9000, more pixels than the model input takes" in records[f"3/huge-{k}.png"]["error"]
               for k in range(8))
    peak = records["3/zz-small.png"]["worker_peak_rss_mb"]
    assert 0 < peak < WORKER_RSS_BOUND_MB, f"the worker's peak RSS was {peak:.0f} MB"
