"""The a1 reference scheduler, except that a prompt longer than the token budget is never admitted.

It admits a request only when its whole prompt fits in the step's budget, missing the handout's
tip on long prompts: a prompt over ``max_num_batched_tokens`` never fits, so it waits forever,
and, first come first served, so does every request behind it (in a server, they time out).
No public test has such a prompt, so it passes them all; the hidden test on long prompts
catches it.
"""

from __future__ import annotations

from collections import deque

from engine_core.scheduler import ScheduledSeq
from solutions.a1.scheduler import ContinuousBatchingScheduler


class LongPromptWaitsScheduler(ContinuousBatchingScheduler):
    def schedule(self) -> list[ScheduledSeq]:
        if not self.waiting or self.waiting[0].num_uncomputed_tokens <= self.ctx.max_num_batched_tokens:
            return super().schedule()
        # The mistake: the oldest request can never fit, so nothing is admitted, now or later.
        waiting, self.waiting = self.waiting, deque()
        try:
            return super().schedule()
        finally:
            self.waiting = waiting
