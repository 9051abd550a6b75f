"""The a2 reference scheduler, except that it preempts the oldest running sequence, not the newest.

When a sequence cannot get a block it preempts the oldest *other* running sequence (itself only
when it runs alone), reasoning that the oldest has had its share. That victim was usually
planned already this step, so it stays in the plan with no blocks (the loop's invariant check
reports it when it serves), and the oldest request is the one that keeps being recomputed. The
public tests preempt with two sequences running, where the oldest other and the newest are the
same one, so it passes them all; the hidden tests on choosing the victim catch it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a2.scheduler import PagedScheduler


class PreemptsOldestScheduler(PagedScheduler):
    def _make_room(self, seq: Sequence, n: int) -> bool:
        while self._blocks_missing(seq, n) > self.ctx.allocator.num_free:
            # The mistake: the oldest other sequence instead of the newest (self.running[-1]).
            victim = next((other for other in self.running if other is not seq), seq)
            self._preempt(victim)
            if victim is seq:
                return False
        self._allocate(seq, n)
        return True
