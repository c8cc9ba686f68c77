"""Which published pilots serve: a file that says `ready` may belong to a pilot that is gone."""

from __future__ import annotations

import os
import socket
import time

from dgaas_flow.campaign.fanout import PilotWatch
from dgaas_flow.pilot.endpoint import SILENT_MIN_S, Endpoint
from dgaas_flow.pilot.run import status, stop_all

DEAD_PID = 2**22 + 12345


def remote(state: str = "ready", silent_s: float | None = 0.0, every_s: float | None = 5.0) -> Endpoint:
    heartbeat = None if silent_s is None else time.time() - silent_s
    return Endpoint(host="wn042.example.org", state=state, supervisor_pid=DEAD_PID, heartbeat_at=heartbeat,
                    heartbeat_every_s=every_s, http_url="http://10.1.2.3:8000")


def test_a_remote_pilot_is_gone_once_its_heartbeat_stops():
    assert remote(silent_s=10).serving()  # its pid means nothing here: only the heartbeat counts
    assert not remote(silent_s=SILENT_MIN_S + 1).serving()  # its node died without a word
    assert remote(silent_s=SILENT_MIN_S + 1, every_s=120).serving()  # within three of its own intervals
    assert not remote(silent_s=361, every_s=120).serving()
    assert remote(silent_s=None).serving()  # a pilot that publishes no heartbeat is taken at its word
    assert not remote("starting", silent_s=600).gone()  # a slow start (an image pull) writes no heartbeat
    assert not remote("restarting", silent_s=600).gone()
    beat = remote(silent_s=0)
    assert beat.gone(now=beat.heartbeat_at + SILENT_MIN_S + 1) and not beat.gone(now=beat.heartbeat_at + 1)


def test_a_pilot_of_this_host_is_gone_once_its_supervisor_has_exited():
    here = socket.gethostname()
    assert Endpoint(host=here, state="ready", supervisor_pid=os.getpid(), heartbeat_at=0.0,
                    heartbeat_every_s=5.0).serving()
    assert not Endpoint(host=here, state="ready", supervisor_pid=DEAD_PID).serving()


def test_the_progress_display_counts_only_the_pilots_that_serve(tmp_path):
    remote(silent_s=1).write(tmp_path / "live.json")
    remote(silent_s=3600).write(tmp_path / "lost.json")
    remote("starting", silent_s=None).write(tmp_path / "starting.json")
    watch = PilotWatch(tmp_path, since="")
    watch.read()
    assert (watch.up, watch.ready) == (2, 1)


def test_pilot_status_and_stop_judge_other_hosts_by_their_heartbeat_and_leave_their_files(tmp_path):
    remote(silent_s=1).model_copy(update={"name": "live"}).write(tmp_path / "live.json")
    remote(silent_s=3600).model_copy(update={"name": "lost"}).write(tmp_path / "lost.json")
    Endpoint(name="killed", host=socket.gethostname(), state="ready",
             supervisor_pid=DEAD_PID).write(tmp_path / "killed.json")
    assert {row["name"]: row["running"] for row in status(tmp_path)} == {"live": True, "lost": False,
                                                                          "killed": False}
    assert stop_all(tmp_path) == 0  # the killed one was not running; the others are not this host's
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["live.json", "lost.json"]
