"""Campaign bookkeeping without servers: item enumeration, resume and the summary."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np

from dgaas_flow import inputs
from dgaas_flow.campaign import format_summary, summarize
from dgaas_flow.campaign.records import ChunkRecords, quote
from dgaas_flow.campaign.session import Session
from dgaas_flow.campaign.sink import ResultsFile
from dgaas_flow.campaign.stats import Latencies, RunStats
from dgaas_flow.campaign.summary import earlier_segments
from dgaas_flow.inputs import ChunkReader
from dgaas_flow.inputs import enumerate_items as enumerate_files
from dgaas_flow.specs import load_workflow
from tests.conftest import WORKFLOW


def test_items_have_stable_relative_ids_and_folder_labels(digits_data):
    wf = load_workflow(WORKFLOW)
    where = (wf.inputs.files, wf.inputs.format, wf.inputs.labels)
    items = list(enumerate_files(*where))
    assert len(items) == 1797 == len({i.id for i in items})
    assert "0/0000.png" in {i.id for i in items}
    assert [i.id for i in enumerate_files(*where, limit=3)] == [i.id for i in items[:3]]
    assert all(i.id.split("/")[0] == i.label for i in items)


def test_rows_files_give_one_item_per_row_read_back_by_the_task(tmp_path):
    (tmp_path / "b").mkdir()
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b" / "c.npy", a[:1] * 10)
    (tmp_path / "broken.npy").write_text("not an array")
    items = {i.id: i for i in enumerate_files(str(tmp_path / "**" / "*.npy"), "rows", "parent_dir")}
    assert set(items) == {"a.npy:0", "a.npy:1", "a.npy:2", "b/c.npy:0", "broken.npy"}
    assert items["b/c.npy:0"].label == "b" and items["broken.npy"].row is None
    chunk = [items[i].task_item() for i in ("a.npy:1", "a.npy:2", "b/c.npy:0", "broken.npy", "a.npy:0")]
    blocks = list(ChunkReader("rows").blocks(chunk))
    # consecutive rows of one file are read as one block; the rest alone
    assert [ids for ids, _, _ in blocks] == [["a.npy:1", "a.npy:2"], ["b/c.npy:0"], ["broken.npy"], ["a.npy:0"]]
    assert blocks[0][2]["array"].tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]]  # named arrays: field `array`
    assert blocks[1][2]["array"].tolist() == [[0, 10, 20, 30]]
    assert isinstance(blocks[2][2], ValueError) and "broken.npy" not in str(blocks[2][2])  # numpy's reason
    np.save(tmp_path / "a.npy", a[:1])  # the file shrank after it was listed: an error, not a short block
    (_, _, shrunk), = ChunkReader("rows").blocks([items["a.npy:1"].task_item(), items["a.npy:2"].task_item()])
    assert isinstance(shrunk, ValueError) and "fewer rows" in str(shrunk)


def test_enumerating_many_rows_holds_no_list_of_them(tmp_path):
    """The driver's memory must not grow with the item count: enumeration streams."""
    np.save(tmp_path / "big.npy", np.zeros((200_000, 1), dtype=np.uint8))
    tracemalloc.start()
    count = sum(1 for _ in enumerate_files(str(tmp_path / "*.npy"), "rows", "none"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 200_000
    assert peak < 1_000_000, f"enumeration held {peak} bytes; a list of the ids would take about 15 MB"


def test_resume_keeps_each_success_once_and_retries_errors_and_torn_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [
        {"id": "a", "ok": True, "prediction": "1"},
        {"id": "b", "ok": False, "error": "TimeoutError: x"},
        {"id": "a", "ok": True, "prediction": "1"},
        {"id": "c", "ok": True, "prediction": "2"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"id": "d", "ok": tr')
    results = ResultsFile(path)
    assert len(results.done) == 2 and "a" in results.done and "c" in results.done
    assert "b" not in results.done and "d" not in results.done and "" not in results.done
    again = ChunkRecords(quote(["b", "d"]), [None, None])
    again.succeed([0, 1], np.eye(2, dtype=np.float32), 1, ["0", "1"], None, None, 1.0)
    results.append(again.outcome([1.0]))
    results.close()
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == ["a", "c", "b", "d"]


def test_resuming_a_large_campaign_holds_digests_not_ids(tmp_path):
    """A set of 100k id strings takes about 10 MB; the digests of the done items take 16 bytes each."""
    path = tmp_path / "results.jsonl"
    with open(path, "w") as f:
        f.writelines(f'{{"id":"events/run-{i // 1000:04d}.npy:{i % 1000}","ok":true}}\n' for i in range(100_000))
    tracemalloc.start()
    results = ResultsFile(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    results.close()
    assert len(results.done) == 100_000 and "events/run-0099.npy:999" in results.done
    assert "events/run-0100.npy:0" not in results.done
    assert peak < 5_000_000, f"resuming held {peak} bytes"


def test_summary_counts_the_whole_campaign_and_this_runs_speed(tmp_path, digits_data):
    """The counts are those of results.jsonl, resumed lines included, though the campaign keeps them
    as it goes instead of reading the file back at its end."""
    wf = load_workflow(WORKFLOW)
    earlier = [
        {"id": "1", "ok": True, "prediction": "3", "label": "3", "correct": True, "pilot": "http://p:1"},
        {"id": "3", "ok": False, "error": "TimeoutError: x", "label": "1", "pilot": None},  # tried again
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in earlier))
    results = ResultsFile(path)
    chunk = ChunkRecords(quote(["2", "3", "4"]), ["5", "1", None])
    digits = [str(d) for d in range(10)]
    chunk.succeed([0], np.eye(10, dtype=np.float32)[[4]], 1, digits, "http://p:1", "0", 2.0)
    chunk.fail([1], "cannot read: x: bad", None)
    chunk.succeed([2], np.eye(10, dtype=np.float32)[[7]], 1, digits, "http://p:2", "0", 3.0)
    results.append(chunk.outcome([2.0, 3.0]))
    results.close()
    stats = RunStats(resumed=len(results.done))
    stats.add(3, 1, [1.0, 2.0, 3.0, 4.0])
    s = summarize(wf, tmp_path, total=4, stats=stats, tally=results.tally, session=Session(wf, tmp_path),
                  before={}, fresh=None)
    assert (s["items_total"], s["items_ok"], s["items_failed"]) == (4, 3, 1)
    assert s["accuracy"] == 0.5
    assert s["pilots"] == [{"endpoint": "http://p:1", "items": 2}, {"endpoint": "http://p:2", "items": 1}]
    assert s["failures_by_reason"] == {"cannot read": 1}
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["1", "2", "3", "4"]
    assert s["items_ok"] == sum(r["ok"] for r in lines) and s["items_failed"] == sum(not r["ok"] for r in lines)
    assert s["accuracy"] == sum(r.get("correct", 0) for r in lines) / sum("correct" in r for r in lines)
    assert s["latency_ms"]["p50"] == 2.0 and abs(s["latency_ms"]["max"] - 4.0) < 0.01 and s["requests"] == 4
    assert sum(n for _, n in s["latency_ms"]["histogram"]) == 4
    assert s["time_to_first_result_s"] is not None and s["triton"] == []


def test_chunks_of_runs_hold_every_item_once_in_order_within_limit_and_skip_done(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2500, 2), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.zeros((700, 2), dtype=np.float32))
    (tmp_path / "c.npy").write_text("not an array")  # a whole-file item: its task records the error
    pattern = str(tmp_path / "*.npy")
    every = [i.id for i in enumerate_files(pattern, "rows", "none")]
    runs = lambda: inputs.enumerate_slices(pattern, "rows", "none")  # noqa: E731

    def ids(chunks):
        return [[i.id for run in chunk for i in run.items()] for chunk in chunks]

    chunks = ids(inputs.chunk_slices(runs(), 1000))
    assert [len(c) for c in chunks] == [1000, 1000, 1000, 201] and sum(chunks, []) == every
    assert sum(ids(inputs.chunk_slices(runs(), 1000, limit=2600)), []) == every[:2600]
    done = set(every[10:20]) | {every[-1]} | set(every[2400:2600])
    resumed = ids(inputs.chunk_slices(runs(), 1000, done=done))
    assert sum(resumed, []) == [i for i in every if i not in done] and len(resumed[0]) == 1000
    # what a task receives rebuilds the same runs
    chunk = next(inputs.chunk_slices(runs(), 1000, done=done))
    assert [inputs.FileSlice(*json.loads(json.dumps(r.fields()))) for r in chunk] == chunk


def _summary_of(wf, folder, latencies_ms: list[float], earlier: list[dict]) -> dict:
    stats = RunStats()
    stats.add(len(latencies_ms), 0, latencies_ms)
    stats.end()
    results = ResultsFile(folder / "results.jsonl")
    results.close()
    s = summarize(wf, folder, total=10, stats=stats, tally=results.tally, session=Session(wf, folder),
                  before={}, fresh=None, earlier_runs=earlier)
    (folder / "summary.json").write_text(json.dumps(s))
    return s


def test_a_resumed_runs_summary_keeps_each_runs_figures_and_merges_their_latencies_exactly(tmp_path, digits_data):
    """The README's order, run then run again: the second summary's requests and latency are of both
    runs (their HDR histograms merged, not the percentiles averaged), each run's own figures kept as
    a segment, and items_this_run still the last call's."""
    wf = load_workflow(WORKFLOW)
    first = _summary_of(wf, tmp_path, [1.0, 2.0, 3.0, 50.0], earlier=earlier_segments(tmp_path))
    assert first["requests"] == 4 and len(first["segments"]) == 1 and "latency_exact" not in first
    second = _summary_of(wf, tmp_path, [], earlier=earlier_segments(tmp_path))  # a rerun with nothing left to do
    third = _summary_of(wf, tmp_path, [4.0, 5.0], earlier=earlier_segments(tmp_path))
    assert second["requests"] == 4 and second["requests_this_run"] == 0 and second["items_this_run"] == 0
    assert second["latency_ms"] == first["latency_ms"]
    everything = Latencies()
    everything.record([1.0, 2.0, 3.0, 50.0, 4.0, 5.0])
    assert third["latency_ms"] == everything.summary() and third["requests"] == 6
    assert [seg["requests"] for seg in third["segments"]] == [4, 0, 2]
    assert [seg["items"] for seg in third["segments"]] == [4, 0, 2] and third["items_this_run"] == 2
    assert third["segments"][0]["latency_ms"]["p99"] == first["latency_ms"]["p99"]
    assert "(6 requests over 3 runs of this folder)" in format_summary(third)
    assert "this run: 2 items" in format_summary(third) and ", 2 requests" in format_summary(third)


def test_a_summary_written_before_segments_becomes_the_first_one_known_by_its_buckets(tmp_path, digits_data):
    wf = load_workflow(WORKFLOW)
    old = {"started_at": "2026-01-01T00:00:00+00:00", "items_this_run": 7, "items_resumed": 0, "wall_seconds": 2.0,
           "items_per_second": 3.5, "requests": 3, "complete": True,
           "latency_ms": {"p50": 2.0, "p95": 5.0, "p99": 5.0, "mean": 3.0, "histogram": [[1.0, 0], [2.0, 2], [5.0, 1]]}}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    s = _summary_of(wf, tmp_path, [10.0], earlier=earlier_segments(tmp_path))
    assert s["requests"] == 4 and s["latency_exact"] is False
    assert s["segments"][0]["items"] == 7 and s["segments"][0]["requests"] == 3
    assert s["latency_ms"]["p50"] == 2.0 and abs(s["latency_ms"]["max"] - 10.0) < 0.01
    assert s["latency_ms"]["mean"] == 4.75  # (3 x 3.0 + 10.0) / 4
    (tmp_path / "summary.json").write_text("{broken")
    assert earlier_segments(tmp_path) == []  # said in the log; the new summary starts the list again


def test_results_landing_together_give_no_steady_pace(monkeypatch):
    """Chunks that arrive within a millisecond of each other say nothing about a pace: no
    `steady_items_per_second` of hundreds of thousands of items/s in the summary; a second
    apart, they do."""
    from dgaas_flow.campaign import stats as stats_module

    clock = iter([100.0, 100.0005, 100.001, 101.0])
    monkeypatch.setattr(stats_module.time, "monotonic", lambda: next(clock))
    run = RunStats(started=99.0)
    for _ in range(3):
        run.add(300, 0, [1.0])
    assert run.steady_rate() is None
    run.add(300, 0, [1.0])
    assert run.steady_rate() == 900.0


def test_the_summarys_timing_line_has_one_shape_and_a_pace_only_when_there_is_one(tmp_path, digits_data):
    """Scripts and the docs match the printed summary: results landing within a second print no
    made-up pace ("then 0.0 items/s"), and the line itself never changes shape."""
    wf = load_workflow(WORKFLOW)
    quick = _summary_of(wf, tmp_path, [1.0, 2.0], earlier=[])
    text = format_summary({**quick, "time_to_first_result_s": 2.04, "time_to_last_result_s": 2.31})
    assert "  first result after 2.0 s, the last after 2.3 s" in text.splitlines()
    assert "between them" not in text and "items/s)" in text
    paced = {**quick, "time_to_first_result_s": 2.0, "time_to_last_result_s": 12.0, "steady_items_per_second": 99.5}
    assert "  between them: 99.5 items/s" in format_summary(paced).splitlines()
    assert quick["time_to_last_result_s"] is not None and quick["steady_items_per_second"] is None
