"""Scale-test bookkeeping without servers: the steps' workflows and items, and which steps a rerun keeps."""

from __future__ import annotations

import json
import time

from dgaas_flow.campaign.files import STEP
from dgaas_flow.campaign.scale import _completed, step_runs, step_workflow
from dgaas_flow.specs import ScaleStep, load_workflow
from tests.conftest import DIGITS


def test_a_step_has_exactly_its_blocks_and_workers(digits_data):
    wf = load_workflow(DIGITS / "scale-test.yaml")
    step_wf = step_workflow(wf, ScaleStep(blocks=3, workers_per_node=5, items=10))
    p = step_wf.provider
    assert (p.init_blocks, p.min_blocks, p.max_blocks, p.workers_per_node) == (3, 3, 3, 5)
    assert step_wf.scale_test is None and step_wf.source == wf.source
    assert step_workflow(wf, ScaleStep(blocks=1, items=10)).provider.workers_per_node == wf.provider.workers_per_node


def test_inputs_are_cycled_with_new_ids_until_the_step_has_its_items(digits_data):
    wf = load_workflow(DIGITS / "scale-test.yaml")
    items = [item for run in step_runs(wf, ScaleStep(blocks=1, items=4000)) for item in run.items()]
    ids = [i.id for i in items]
    assert len(ids) == len(set(ids)) == 4000
    assert sum(i.endswith("#1") for i in ids) == 1797 and sum(i.endswith("#2") for i in ids) == 4000 - 2 * 1797
    first = {i.id: i.path for i in items[:1797]}
    assert all(first[i.id.split("#")[0]] == i.path for i in items[1797:])  # same files again


def test_a_hold_time_bounds_the_items_of_a_step(digits_data):
    wf = load_workflow(DIGITS / "scale-test.yaml")
    items = step_runs(wf, ScaleStep(blocks=1, hold_s=0.01))
    next(items)
    time.sleep(0.02)
    assert next(items, None) is None


def test_a_rerun_keeps_only_completed_steps_with_unchanged_settings(tmp_path):
    step = ScaleStep(blocks=2, items=100)
    (tmp_path / STEP).write_text(step.model_dump_json())
    (tmp_path / "summary.json").write_text(json.dumps({"complete": True, "items_ok": 100}))
    assert _completed(tmp_path, step)["items_ok"] == 100
    assert _completed(tmp_path, ScaleStep(blocks=3, items=100)) is None
    (tmp_path / "summary.json").write_text(json.dumps({"complete": False}))
    assert _completed(tmp_path, step) is None
