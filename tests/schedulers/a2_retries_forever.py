"""The a2 reference scheduler, except that it accepts a request that can never fit in the pool.

It leaves out ``_check_fits``: a request whose prompt + max_tokens needs more blocks than the
whole pool is queued like any other. It runs until it has taken every block, preempts itself,
and comes back, over and over, until its prompt and output no longer fit even in an empty pool;
then it waits at the head of the queue forever, and every request behind it with it. No public
test sends such a request, so it passes them all; the hidden test on requests that can never
fit catches it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a2.scheduler import PagedScheduler


class RetriesForeverScheduler(PagedScheduler):
    def _check_fits(self, seq: Sequence) -> None:
        pass  # the mistake: no request is ever rejected
