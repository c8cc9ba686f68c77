"""The autoscaler's controller against recorded metric series: hysteresis, cooldown, bounds."""

from __future__ import annotations

import json

from dgaas_flow.campaign.autoscaler import DECISIONS, Autoscaler, Decision
from dgaas_flow.report.data import read_decisions, read_timeline
from dgaas_flow.sites.base import AutoscaleSpec

SPEC = AutoscaleSpec(target=20, window_s=10, cooldown_s=30, idle_s=20)


def series(queue_ms_per_exec: list[float], executions_per_tick: float = 100.0):
    """Cumulative counters of one pilot, one reading per tick (1 s apart)."""
    q = x = 0.0
    for ms in queue_ms_per_exec:
        q, x = q + ms * 1000.0 * executions_per_tick, x + executions_per_tick
        yield {"queue_us": q, "executions": x}


def run(ctl: Autoscaler, readings, blocks: int = 1, waiting: int = 10, start: float = 0.0):
    decisions = []
    for i, counters in enumerate(readings):
        d = ctl.observe(start + i, {"p0": counters}, blocks, waiting)
        if d:
            decisions.append((start + i, d))
            blocks = d.blocks_after
    return decisions


def test_scales_out_only_after_a_whole_window_above_target():
    ctl = Autoscaler(SPEC, min_blocks=1, max_blocks=3)
    (t, d), = run(ctl, series([50.0] * 15))
    assert t >= SPEC.window_s and d.action == "scale_out" and (d.blocks_before, d.blocks_after) == (1, 2)
    assert d.metric == 50.0 and "waiting" in d.why


def test_a_dip_below_target_restarts_the_window():
    ctl = Autoscaler(SPEC, min_blocks=1, max_blocks=3)
    assert run(ctl, series([50.0] * 8 + [5.0] + [50.0] * 8)) == []  # never 10 s above in a row


def test_no_scale_out_without_waiting_work_or_beyond_max():
    assert run(Autoscaler(SPEC, 1, 3), series([50.0] * 20), waiting=0) == []
    assert run(Autoscaler(SPEC, 1, 2), series([50.0] * 20), blocks=2) == []


def test_cooldown_spaces_decisions():
    ctl = Autoscaler(SPEC, min_blocks=1, max_blocks=5)
    decisions = run(ctl, series([80.0] * 100))
    times = [t for t, _ in decisions]
    assert [d.blocks_after for _, d in decisions] == [2, 3, 4]
    assert all(b - a >= SPEC.cooldown_s for a, b in zip(times, times[1:], strict=False))


def test_idle_pilots_release_blocks_down_to_min_blocks_only():
    ctl = Autoscaler(SPEC, min_blocks=1, max_blocks=3)
    idle = [{"queue_us": 0.0, "executions": 0.0}] * 200
    decisions = run(ctl, idle, blocks=3, waiting=0)
    assert [(d.action, d.blocks_after) for _, d in decisions] == [("scale_in", 2), ("scale_in", 1)]
    assert decisions[0][0] >= SPEC.idle_s


def test_busy_pilots_are_not_released():
    ctl = Autoscaler(SPEC, min_blocks=0, max_blocks=3)
    assert run(ctl, series([1.0] * 100), blocks=2, waiting=0) == []


def test_decisions_reach_the_timeline_and_the_report(tmp_path):
    from dgaas_flow.campaign.stats import RunStats, Timeline

    path = tmp_path / "timeline.jsonl"
    timeline = Timeline(path, RunStats())
    DECISIONS.publish(Decision(0.0, "scale_out", 42.0, 1, 2, "queue time above 20 ms"))
    timeline.tick(1, 1, force=True)
    timeline.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["autoscale"]["blocks_after"] == 2 and "items" in lines[1]
    assert read_decisions(path)[0]["metric"] == 42.0
    assert len(read_timeline(path)) == 1


def test_break_even_is_the_most_clients_below_target():
    from dgaas_flow.campaign.scale import break_even, queue_ms_per_execution

    assert queue_ms_per_execution([{"queue_ms_per_request": 2.0, "requests": 100, "executions": 10}]) == 20.0
    steps = [{"workers": w, "items_per_second": 100.0 * w, "queue_ms_per_execution": q}
             for w, q in ((1, 0.5), (2, 4.0), (4, 15.0), (8, 60.0))]
    assert break_even(steps, 20.0) == {"target_ms": 20.0, "clients_per_pilot": 4, "items_per_second_per_pilot": 400.0,
                                       "crossed_at_clients": 8, "crossed": True}
    assert break_even(steps[:2], 20.0)["crossed"] is False


def test_the_break_even_ratio_adds_pilots_for_clients_before_any_queue_and_keeps_them():
    """clients_per_pilot (a break-even found by `scale-test --break-even`): 10 client workers at 4
    per pilot need 3 pilot blocks, added one per cooldown even while the queue time is low, and
    idle pilots are not released below that; with 4 clients, down to 1."""
    spec = AutoscaleSpec(target=20, window_s=10, cooldown_s=30, idle_s=20, clients_per_pilot=4)
    ctl, blocks = Autoscaler(spec, min_blocks=1, max_blocks=5), 1
    idle = {"p0": {"queue_us": 0.0, "executions": 0.0}}

    def ticks(start: float, clients: int) -> list[Decision]:
        nonlocal blocks
        made = []
        for t in range(200):
            d = ctl.observe(start + t, idle, blocks, waiting=0, clients=clients)
            if d:
                made.append(d)
                blocks = d.blocks_after
        return made

    made = ticks(0.0, clients=10)
    assert [(d.action, d.blocks_after) for d in made] == [("scale_out", 2), ("scale_out", 3)]
    assert "10 client workers need 3 pilot(s)" in made[0].why
    assert [(d.action, d.blocks_after) for d in ticks(200.0, clients=4)] == [("scale_in", 2), ("scale_in", 1)]


def test_a_busy_pilot_that_publishes_its_counters_seldom_is_not_idle():
    """Pilots write their counters every triton.health_interval_s (5 s by default); ticks in
    between read the same numbers. Judged by the pilot's own publications, a pilot busy in every
    reading is never released, however long the gaps; one whose readings stop moving is."""
    spec = AutoscaleSpec(target=20, window_s=10, cooldown_s=30, idle_s=3)
    ctl, made = Autoscaler(spec, min_blocks=1, max_blocks=3), []
    executions = 0.0
    for t in range(100):
        if t % 5 == 0:
            executions += 50.0  # a reading every 5 s, each with new executions
        counters = {"queue_us": executions * 10.0, "executions": executions, "published_at": 1000.0 + t - t % 5}
        if d := ctl.observe(float(t), {"p0": counters}, 2, waiting=0):
            made.append(d)
    assert made == []
    for t in range(100, 120):  # the readings go on, without executions: idle after 3 s of them
        counters = {"queue_us": executions * 10.0, "executions": executions, "published_at": 1000.0 + t - t % 5}
        if d := ctl.observe(float(t), {"p0": counters}, 2, waiting=0):
            made.append(d)
    assert [(d.action, d.blocks_after) for d in made] == [("scale_in", 1)]
