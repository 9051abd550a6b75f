"""The a1 reference scheduler, except that ``schedule()`` never returns once a request is waiting.

A busy loop, as a student's ``while`` that never advances would be: it holds the GIL and ignores
every signal but SIGKILL's. The grader must time the part out, kill it, and still write a valid
results.json that says the part timed out.
"""

from __future__ import annotations

from engine_core.scheduler import ScheduledSeq
from solutions.a1.scheduler import ContinuousBatchingScheduler


class HangInScheduleScheduler(ContinuousBatchingScheduler):
    def schedule(self) -> list[ScheduledSeq]:
        spins = 0
        while self.waiting or self.running:
            spins += 1  # never makes progress
        return super().schedule()
