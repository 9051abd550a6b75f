"""A scheduler that accepts requests and never runs them: a stream stays open with no tokens.

The server's shutdown test uses it: a request that would never end must not keep the server
from stopping past its --shutdown-timeout.
"""

from __future__ import annotations

from engine_core.scheduler import ScheduledSeq, Scheduler, Sequence


class NeverSchedulesScheduler(Scheduler):
    def add(self, seq: Sequence) -> None:
        pass

    def schedule(self) -> list[ScheduledSeq]:
        return []

    def finish(self, seq: Sequence) -> None:
        seq.block_table = []
