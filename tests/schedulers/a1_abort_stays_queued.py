"""The a1 reference scheduler, except that ``finish`` forgets only running sequences.

A request aborted before it was admitted (its client went away while it waited) stays in the
waiting queue: later it is admitted, takes blocks and a slot, and is scheduled although it has
finished (the loop's invariant check reports it when it serves). The handout says ``finish`` may
get a waiting sequence, but no public test aborts one, so it passes them all; the hidden test
on aborting a waiting request catches it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a1.scheduler import ContinuousBatchingScheduler


class AbortStaysQueuedScheduler(ContinuousBatchingScheduler):
    def finish(self, seq: Sequence) -> None:
        if seq in self.running:  # the mistake: a waiting sequence is left where it is
            super().finish(seq)
