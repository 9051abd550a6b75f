"""The a1 reference scheduler, except that the first ``schedule()`` with work spins for 3 seconds.

A spin, not a sleep: a student's loop that does not advance holds the GIL the same way. The
watchdog tests use it with a 1-second hook timeout: the waiting request must fail while the hook
still spins, and once it returns the loop must recover and serve the next request.
"""

from __future__ import annotations

import time

from engine_core.scheduler import ScheduledSeq
from solutions.a1.scheduler import ContinuousBatchingScheduler

STALL_SECONDS = 3.0


class StallsInScheduleScheduler(ContinuousBatchingScheduler):
    stalled = False  # once per process: the restarted scheduler behaves

    def schedule(self) -> list[ScheduledSeq]:
        if self.waiting and not StallsInScheduleScheduler.stalled:
            StallsInScheduleScheduler.stalled = True
            end = time.monotonic() + STALL_SECONDS
            while time.monotonic() < end:
                pass
        return super().schedule()
