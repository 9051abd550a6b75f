"""The a1 reference scheduler, except that its third ``schedule()`` call raises (once per process).

The server tests use it to check that a scheduler crash fails only the requests in flight,
with a 500 (or an SSE error event) that names this file and line, and that the loop then
carries on with a fresh scheduler. The call count lives on the class, not the instance,
because the loop builds a new instance after the crash and that one must work.
"""

from __future__ import annotations

from typing import ClassVar

from engine_core.scheduler import ScheduledSeq
from solutions.a1.scheduler import ContinuousBatchingScheduler


class CrashOnThirdStepScheduler(ContinuousBatchingScheduler):
    calls: ClassVar[int] = 0

    def schedule(self) -> list[ScheduledSeq]:
        type(self).calls += 1
        if type(self).calls == 3:
            raise RuntimeError("deliberate crash on the third schedule() call")
        return super().schedule()
