"""The a2 reference scheduler, except that a preempted sequence goes to the back of the queue.

It treats a victim like a new request, behind every request that arrived after it: those are
admitted first, and the victim, which has already waited and generated part of its output, waits
again, for as long as new requests keep coming. The public tests preempt with nothing else
waiting, where the back is the front, so it passes them all; the hidden test on re-admission
order catches it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a2.scheduler import PagedScheduler


class RequeuesAtBackScheduler(PagedScheduler):
    def _preempt(self, seq: Sequence) -> None:
        super()._preempt(seq)
        self.waiting.remove(seq)
        self.waiting.append(seq)  # the mistake: should stay at the front (appendleft)
