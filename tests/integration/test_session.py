"""Several campaigns in one session on the local provider: one block and one real pilot serve them
all, each campaign's results and Triton figures are its own, and closing the session stops it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dgaas_flow.campaign import run_campaign, workflow_slices
from dgaas_flow.campaign.session import Session
from dgaas_flow.errors import UserError
from dgaas_flow.pilot.endpoint import read_registry
from dgaas_flow.specs import load_workflow
from tests.conftest import WORKFLOW, copy_workflow, processes_mentioning, run_cli

pytestmark = pytest.mark.integration


def digits_workflow(folder: Path, images: Path, name: str, pattern: str = "*") -> Path:
    """The digits workflow under another name, over the image folders matching `pattern`."""
    text = (WORKFLOW.read_text().replace("\nname: digits\n", f"\nname: {name}\n")
            .replace("files: data/images/*/*.png", f"files: data/images/{pattern}/*.png")
            .replace("top_k: 1", f"top_k: 1\n  dir: {folder / 'runs' / name}"))
    return copy_workflow(folder / name, text, images)


def served_once(out: Path, expected: int) -> list[dict]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == expected == len({r["id"] for r in records}) and all(r["ok"] for r in records)
    return records


def test_campaigns_in_a_session_share_one_pilot_and_count_their_own_work(tmp_path, digits_data):
    images = digits_data / "images"
    first = load_workflow(digits_workflow(tmp_path, images, "first", "[0-4]"))
    second = load_workflow(digits_workflow(tmp_path, images, "second", "[5-9]"))
    other_server = load_workflow(digits_workflow(tmp_path, images, "other", "[5-9]"))
    other_server.triton.exit_timeout_s += 1
    (first_n, second_n) = (sum(1 for _ in images.glob(f"{d}/*.png")) for d in ("[0-4]", "[5-9]"))

    with Session(first) as session:
        a = run_campaign(first, progress="quiet", session=session)
        with pytest.raises(UserError, match=r"workflow other \(.*other/workflow.yaml\): triton differ"):
            run_campaign(other_server, progress="quiet", session=session)
        with pytest.raises(UserError, match="another session .* is open in this process"):
            Session(second).open()
        b = run_campaign(second, progress="quiet", session=session)
        (endpoint,) = read_registry(session.registry)  # no second pilot started
        assert endpoint.state == "ready"

        # A campaign stopped with chunks in flight: its tasks run on, and the next campaign waits
        # for them, so that its workers are free and its Triton figures hold none of their requests.
        again = load_workflow(digits_workflow(tmp_path, images, "again"))
        again.chunk_size = 16
        stop = threading.Event()

        def runs_then_stop():
            for i, run in enumerate(workflow_slices(again)):
                if i == 200:
                    stop.set()
                yield run

        with pytest.raises(KeyboardInterrupt):
            run_campaign(again, progress="quiet", session=session, stop=stop, runs=runs_then_stop(), total=1797)
        stopped = json.loads((again.out_dir() / "summary.json").read_text())
        assert not stopped["complete"] and 0 < stopped["items_this_run"] < 1797
        rerun = run_campaign(again, progress="quiet", session=session)
        assert rerun["items_this_run"] == 1797 - stopped["items_this_run"] and rerun["items_ok"] == 1797
        (triton,) = rerun["triton"]
        # Triton's figures are this run's; `requests` is of both runs of the folder (summary segments)
        assert (triton["requests"], triton["inferences"]) == (rerun["requests_this_run"], rerun["items_this_run"])
        assert rerun["requests"] == stopped["requests"] + rerun["requests_this_run"]
        served_once(again.out_dir(), 1797)

    assert endpoint.pid is not None and not processes_mentioning(f"--http-port={endpoint.http_url.split(':')[-1]}")
    assert (read_registry(session.registry)[0].state) == "stopped"
    for summary, n, out in ((a, first_n, first.out_dir()), (b, second_n, second.out_dir())):
        records = served_once(out, n)
        assert summary["items_ok"] == n and summary["complete"]
        assert {r["pilot"] for r in records} == {endpoint.http_url}
        # Triton's own counters, read as each campaign ended, give each campaign its own work
        (triton,) = summary["triton"]
        assert (triton["inferences"], triton["requests"]) == (n, summary["requests"])
        assert json.loads((out / "summary.json").read_text())["items_ok"] == n
    assert first.out_dir() == session.dir and not (second.out_dir() / "pilots").exists()
    with pytest.raises(UserError, match="session is not open"):
        run_campaign(second, progress="quiet", session=session)


def test_dgaas_flow_run_with_several_workflows_runs_them_on_the_same_pilot(tmp_path, digits_data):
    images = digits_data / "images"
    paths = [digits_workflow(tmp_path, images, name, pattern) for name, pattern in (("a", "[0-2]"), ("b", "[3-9]"))]
    result = run_cli("run", *paths, "--progress", "quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("items ok, 0 failed") == 2
    runs = tmp_path / "runs"
    pilots = [p["endpoint"] for name in "ab" for p in json.loads((runs / name / "summary.json").read_text())["pilots"]]
    # one pilot, whose files are in the session's own folder, not in either workflow's run folder
    assert len(set(pilots)) == 1 and len(read_registry(runs / "session-a+b" / "pilots")) == 1
    assert not (runs / "a" / "pilots").exists() and not (runs / "b" / "pilots").exists()
    served_once(runs / "a", sum(1 for _ in images.glob("[0-2]/*.png")))
    served_once(runs / "b", sum(1 for _ in images.glob("[3-9]/*.png")))
