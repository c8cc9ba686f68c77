"""Failed block submissions: said, retried with backoff, given up on (no scheduler needed)."""

from __future__ import annotations

import logging

import pytest
from parsl.providers import LocalProvider
from parsl.providers.errors import SubmitException

from dgaas_flow.sites.executor import PilotExecutor
from dgaas_flow.sites.submissions import BACKOFF_FIRST_S, Submissions, scheduler_message

REFUSED = "sbatch: error: Batch job submission failed: Invalid partition name specified"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_schedulers_own_words_are_kept():
    exc = SubmitException("parsl.dgaas.block-0", "Could not read job ID", stdout="", stderr=REFUSED + "\n", retcode=1)
    assert scheduler_message(exc) == REFUSED
    assert scheduler_message(RuntimeError("boom")) == "boom"


def test_backoff_doubles_and_gives_up_after_retry_s(caplog):
    clock = Clock()
    s = Submissions(retry_s=20, clock=clock)
    with caplog.at_level(logging.WARNING):
        s.failed("0", REFUSED)
    assert REFUSED in caplog.text and "attempt 1" in caplog.text
    assert not s.may_submit() and s.failing
    clock.now = BACKOFF_FIRST_S
    assert s.may_submit()
    s.failed("1", REFUSED)
    clock.now += BACKOFF_FIRST_S
    assert not s.may_submit()  # doubled
    clock.now += BACKOFF_FIRST_S
    assert s.may_submit()
    clock.now = 25
    s.failed("2", REFUSED)
    assert s.gave_up and REFUSED in s.gave_up and "3 attempts" in s.gave_up
    clock.now = 1000
    assert not s.may_submit()
    assert s.failed_blocks == {"0", "1", "2"}


def test_a_success_ends_the_streak():
    clock = Clock()
    s = Submissions(retry_s=10, clock=clock)
    s.failed("0", REFUSED)
    clock.now = 8
    s.succeeded("1")
    assert not s.failing and s.may_submit()
    clock.now = 30
    s.failed("2", REFUSED)  # a new streak: its own 10 s
    assert s.gave_up is None


class RefusingProvider(LocalProvider):
    def submit(self, command, tasks_per_node, job_name="parsl.localprovider"):
        raise SubmitException(job_name, "Could not read job ID", stderr=REFUSED, retcode=1)


@pytest.fixture
def executor():
    ex = PilotExecutor(label="t", provider=RefusingProvider(init_blocks=2, max_blocks=2), submit_retry_s=100)
    ex._get_launch_command = lambda block_id: "true"  # what start() would set up
    return ex


def test_failed_submissions_do_not_fail_the_executors_tasks(executor):
    assert executor.scale_out_facade(2) == []
    assert executor.scale_out_facade(1) == []  # backing off: not even tried
    assert executor.submissions.attempts == 1 and executor.submissions.last_message == REFUSED
    (status,) = executor.status_facade.values()
    assert REFUSED in status.message
    executor.handle_errors(executor.status_facade)
    assert not executor.bad_state_is_set
