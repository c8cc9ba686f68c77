"""results.jsonl lines: the fast encoder must write exactly what json.dumps would, for every case."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dgaas_flow import inputs
from dgaas_flow.campaign import records

NAMES = ["g", "q", 'W "boosted"', "Z", "tëp"]


def lines(chunk: records.ChunkRecords) -> list[str]:
    """The chunk's lines as the campaign appends them."""
    return chunk.outcome([])["jsonl"].decode().splitlines(keepends=True)


def _parsed(lines: list[str]) -> list[dict]:
    assert all(line.endswith("}\n") and line.count("\n") == 1 for line in lines)
    return [json.loads(line) for line in lines]


def success_lines(ids: list[str], labels: list[str | None], out: np.ndarray, top_k: int, names: list[str],
                  pilot: str | None, block: str | None, latency_ms: float) -> list[str]:
    """The lines of one request whose items are a whole chunk."""
    chunk = records.ChunkRecords(records.quote(ids), labels)
    chunk.succeed(range(len(ids)), out, top_k, names, pilot, block, latency_ms)
    return lines(chunk)


def test_top_1_lines_carry_the_best_class_its_score_and_the_label_check():
    out = np.array([[0.1, 0.7, 0.05, 0.1, 0.05], [0.0, 0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    lines = success_lines(['a.npy:0', 'odd "id"\\ é'], ["q", "g"], out, 1, NAMES, "http://h:1", "0", 1.23456)
    first, second = _parsed(lines)
    assert first == {"id": "a.npy:0", "prediction": "q", "score": 0.7, "ok": True, "pilot": "http://h:1",
                     "block": "0", "latency_ms": 1.235, "label": "q", "correct": True}
    assert second["id"] == 'odd "id"\\ é' and second["prediction"] == "tëp" and second["correct"] is False
    assert list(first) == ["id", "prediction", "score", "ok", "pilot", "block", "latency_ms", "label", "correct"]
    # byte for byte what json.dumps writes (ASCII only, compact separators)
    assert lines[1] == json.dumps(second, separators=(",", ":")) + "\n"


def test_scores_have_the_classification_extensions_six_decimals():
    out = np.array([[0.123456789, 0.2], [12.5, -3.0]], dtype=np.float32)
    a, b = _parsed(success_lines(["a", "b"], [None, None], out, 1, ["x", "y"], None, None, 0.0))
    assert a["score"] == 0.2 and b["score"] == 12.5 and b["prediction"] == "x"
    assert "label" not in a and a["pilot"] is None and a["block"] is None


def test_top_k_ranks_best_first_and_raw_output_keeps_every_value():
    out = np.array([[0.1, 0.6, 0.3]], dtype=np.float32)
    (top,) = _parsed(success_lines(["a"], ["z"], out, 2, ["x", "y", "z"], None, None, 1.0))
    assert top["top"] == [["y", 0.6], ["z", 0.3]] and top["prediction"] == "y" and top["correct"] is False
    (raw,) = _parsed(success_lines(["a"], ["z"], out, 0, [], None, None, 1.0))
    assert np.allclose(raw["output"], [0.1, 0.6, 0.3]) and raw["label"] == "z" and "correct" not in raw
    assert "prediction" not in raw


def test_top_k_beyond_the_classes_gives_every_class():
    out = np.array([[0.1, 0.9]], dtype=np.float32)
    (rec,) = _parsed(success_lines(["a"], [None], out, 5, ["x", "y"], None, None, 1.0))
    assert rec["top"] == [["y", 0.9], ["x", 0.1]]


def test_the_top_class_is_the_first_of_the_ranked_classes():
    """Top-1 and the full ranking agree on the class and its value, ties included; a row with a NaN
    gets the NaN's class, as argmax points at it."""
    rng = np.random.default_rng(0)
    out = rng.integers(0, 4, (200, 6)).astype(np.float32)  # many ties
    out[5, 3] = out[9, 0] = np.nan
    best, values = records.rank(out, 1)
    ranked, ranked_values = records.rank(out, 6)
    np.testing.assert_array_equal(best[:, 0], out.argmax(axis=1))
    np.testing.assert_array_equal(values[:, 0], out[np.arange(200), best[:, 0]])
    assert np.isnan(values[5, 0]) and best[5, 0] == 3 and np.isnan(values[9, 0])
    finite = ~np.isnan(out).any(axis=1)
    np.testing.assert_array_equal(best[finite, 0], ranked[finite, 0])
    np.testing.assert_array_equal(values[finite, 0], ranked_values[finite, 0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_stay_readable_json(bad):
    out = np.array([[bad, 0.0]], dtype=np.float32)
    (rec,) = _parsed(success_lines(["a"], [None], out, 1, ["x", "y"], None, None, 1.0))
    assert math.isnan(rec["score"]) if np.isnan(bad) else rec["score"] == math.inf


def test_a_chunk_keeps_item_order_and_counts_what_the_summary_reports():
    chunk = records.ChunkRecords(records.quote(['a "1"', "b", "c", "d"]), ["W", None, "y", "x"])
    chunk.fail([0], "cannot read: x.npy: broken", None)
    chunk.succeed([3, 2], np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32), 1, ["x", "y"], "http://h:1", "0", 1.0)
    chunk.fail([1], "timeout", "http://h:1")
    a, b, c, d = _parsed(lines(chunk))
    assert a == {"id": 'a "1"', "ok": False, "error": "cannot read: x.npy: broken", "pilot": None, "label": "W"}
    assert b == {"id": "b", "ok": False, "error": "timeout", "pilot": "http://h:1"}
    assert (c["prediction"], c["correct"], d["prediction"], d["correct"]) == ("x", False, "y", False)
    outcome = chunk.outcome([1.5])
    assert outcome == {"jsonl": "".join(lines(chunk)).encode(), "items": 4, "failed": 2, "latencies_ms": [1.5],
                       "pilots": {"http://h:1": 2}, "reasons": {"cannot read": 1, "timeout": 1},
                       "labelled": 2, "correct": 0, "contacted": ["http://h:1"]}


def test_each_row_goes_to_its_own_position_in_any_order():
    chunk = records.ChunkRecords(records.quote("abcdef"), [None] * 6)
    out = np.eye(4, dtype=np.float32)  # row k predicts class k
    chunk.succeed([2, 4, 3, 5], out, 1, ["0", "1", "2", "3"], None, None, 1.0)
    chunk.succeed(range(2), out[:2], 1, ["0", "1", "2", "3"], None, None, 1.0)
    got = {rec["id"]: rec["prediction"] for rec in _parsed(lines(chunk))}
    assert got == {"a": "0", "b": "1", "c": "0", "e": "1", "d": "2", "f": "3"}


@pytest.mark.parametrize("rel, suffix", [("a.npy", ""), ('odd "dir"\\ é/ß.npy', "#2"), ("x\ty.npy", "#1"),
                                         ("\U0001f600 \ud800.npy", "")])
def test_a_runs_quoted_ids_are_its_ids_as_json_writes_them(rel, suffix):
    rows = inputs.FileSlice("/any/" + rel, rel, None, 7, 3, suffix)
    whole = inputs.FileSlice("/any/" + rel, rel, None, suffix=suffix)
    for run in (rows, whole):
        assert inputs.quoted_ids([run]).to_pylist() == [json.dumps(i) for i in run.ids()]
    both = inputs.quoted_ids([whole, rows, whole, whole])  # whole-file ids gathered, in order
    assert both.to_pylist() == [json.dumps(i) for run in (whole, rows, whole, whole) for i in run.ids()]
    out = np.eye(3, dtype=np.float32)
    lines = success_lines(list(rows.ids()), [None] * 3, out, 1, ["0", "1", "2"], None, None, 1.0)
    assert [r["id"] for r in _parsed(lines)] == [f"{rel}:{row}{suffix}" for row in (7, 8, 9)]


@pytest.mark.parametrize("top_k", [0, 1, 3])
@pytest.mark.parametrize("labelled", [False, True])
def test_every_kind_of_line_is_byte_for_byte_what_json_dumps_writes(top_k, labelled):
    ids = ["a.npy:0", 'b "q"\\ é.npy', "\U0001f600.npy", "d"]
    labels = ["q", None, "Z", "g"] if labelled else [None] * 4
    chunk = records.ChunkRecords(records.quote(ids), labels)
    out = np.array([[0.1, 0.7, 0.05, 0.1, 0.05], [0.3, 0.2, 0.1, 0.35, 0.05], [0.0, 0.0, 0.0, 1.0, 0.0]],
                   dtype=np.float32)
    chunk.succeed([0, 1, 2], out, top_k, NAMES, "http://h:1", "0", 2.5)
    chunk.fail([3], 'cannot read: d: "bad" ü', None)
    for line, record in zip(lines(chunk), _parsed(lines(chunk)), strict=True):
        assert line == json.dumps(record, separators=(",", ":")) + "\n"
    assert [r["id"] for r in _parsed(lines(chunk))] == ids


def test_a_server_that_only_failed_counts_as_asked():
    """A campaign reads the counters of every server its chunks asked: failures count there too."""
    chunk = records.ChunkRecords(records.quote(["a", "b"]), [None, None])
    chunk.fail([0], "cannot read: a: broken", None)
    chunk.fail([1], "InferenceServerException: model crashed", "http://h:2")
    outcome = chunk.outcome([])
    assert outcome["pilots"] == {} and outcome["contacted"] == ["http://h:2"]


@pytest.mark.parametrize("top_k", [0, 1, 3])
@pytest.mark.parametrize("labelled", [False, True])
def test_a_workers_arrays_make_the_same_lines_and_counts_in_the_driver(top_k, labelled):
    """A campaign's worker sends arrays (ChunkAnswers) and the driver makes the lines: the bytes
    written and the summary's counts are those of lines made on the worker, whatever was called."""
    ids = records.quote(["a.npy:0", 'b "q"\\ é.npy', "\U0001f600.npy", "d", "e", "f", "g:1", "g:2", "g:3", "g:4"])
    labels = ["q", None, "Z", "g", "g", None, "b", None, "c", "d"] if labelled else [None] * 10
    out = np.array([[0.1, 0.7, 0.05, 0.1, 0.05], [0.3, 0.2, 0.1, 0.35, 0.05], [0.0, 0.0, 0.0, 1.0, 0.0]],
                   dtype=np.float32)
    extra = {"energy": np.array([1.5, -2.0]), "tag": np.array(["x", "ü"])}
    here, sent = records.ChunkRecords(ids, labels), records.ChunkAnswers()
    for chunk in (here, sent):
        chunk.succeed(range(3), out, top_k, NAMES, "http://h:1", "0", 2.5)
        chunk.fail([3], 'cannot read: d: "bad" ü', None)
        chunk.succeed([5, 4], out[:2], top_k, NAMES, "http://h:2", "1", 1.25, extra=extra)
        # the same shape as the first request: their lines are made together, each with its own
        # pilot, block and latency
        chunk.succeed(range(6, 8), out[1:], top_k, NAMES, "http://h:3", "1", 0.75)
        chunk.succeed(range(8, 10), out[:2], top_k, NAMES, "http://h:3", None, 0.5)
    made = records.lines_of(sent.outcome([2.5, 1.25, 0.75, 0.5]), ids, labels)
    assert made == here.outcome([2.5, 1.25, 0.75, 0.5])


def test_a_chunks_requests_in_turn_make_its_lines_in_order():
    """Requests that follow one another (a chunk read without failures) are one run of lines."""
    out = np.random.default_rng(2).random((600, 300), dtype=np.float32)  # 300 classes: indices above 255
    ids = records.quote(f"items.npy:{k}" for k in range(600))
    here, sent = records.ChunkRecords(ids, [None] * 600), records.ChunkAnswers()
    for chunk in (here, sent):
        for start in range(0, 600, 256):
            chunk.succeed(range(start, min(start + 256, 600)), out[start:start + 256], 1,
                          [f"c{k}" for k in range(300)], "http://h:1", "0", start / 100)
    made = records.lines_of(sent.outcome([1.0, 2.0, 3.0]), ids, [None] * 600)
    assert made == here.outcome([1.0, 2.0, 3.0])
    parsed = _parsed(made["jsonl"].decode().splitlines(keepends=True))
    assert [r["latency_ms"] for r in parsed[::256]] == [0.0, 2.56, 5.12]
    assert [r["prediction"] for r in parsed] == [f"c{k}" for k in out.argmax(axis=1)]


def test_what_a_worker_sends_for_a_request_is_a_few_bytes_an_item():
    out = np.random.default_rng(0).random((1024, 10), dtype=np.float32)
    sent = records.ChunkAnswers()
    sent.succeed(range(1024), out, 1, [str(k) for k in range(10)], "http://127.0.0.1:8000", "0", 1.0)
    size = len(sent.outcome([1.0])["answers"])
    text = records.lines_of(sent.outcome([1.0]), records.quote(f"items.npy:{k}" for k in range(1024)),
                            [None] * 1024)["jsonl"]
    assert size < 20 * 1024 < len(text)


def test_scores_are_written_as_json_dumps_writes_them_at_every_magnitude():
    """Lines are joined in Arrow; a score's text must still be Python's repr of the rounded value."""
    rng = np.random.default_rng(1)
    values = [sign * rng.random(2000) * 10.0**e for e in range(-8, 18) for sign in (1, -1)]
    values += [np.arange(-2000, 2000, dtype=np.float64), rng.integers(0, 10**12, 2000).astype(np.float64),
               np.array([0.0, -0.0, 1.0, 1e-4, 9.99995e-5, 1e9, 999999999.5, 1e16, np.nan, np.inf, -np.inf])]
    every = np.concatenate(values)
    for array in (every, every.astype(np.float32)):
        expected = [json.dumps(v) for v in np.round(array.astype(np.float64), records.SCORE_DECIMALS).tolist()]
        assert records._numbers(array).to_pylist() == expected
