"""Parsl's CondorProvider, with a removal that lets a block's pilot stop its server."""

from __future__ import annotations

import time

from parsl.providers import CondorProvider


class GracefulCondorProvider(CondorProvider):
    """Parsl runs `condor_rm` and `condor_rm -forcex` back to back, so the starter kills the pilot
    with SIGKILL before it can stop its server (which then leaks the Python backend's shared
    memory). Here `condor_rm` comes first, the starter sends the job SIGTERM, and Parsl's forced
    removal follows once the jobs have left their slots or after `stop_grace_s`."""

    def __init__(self, *args: object, stop_grace_s: float = 30.0, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.stop_grace_s = stop_grace_s

    def cancel(self, job_ids: list[str]) -> list[bool]:
        ids = " ".join(job_ids)
        self.execute_wait(f"condor_rm {ids}")
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline:
            retcode, stdout, _ = self.execute_wait(f"condor_q {ids} -af RemoteHost")
            if retcode == 0 and all(host == "undefined" for host in stdout.split()):
                break
            time.sleep(0.5)
        return super().cancel(job_ids)
