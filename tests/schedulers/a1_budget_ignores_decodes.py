"""The a1 reference scheduler, except that decode tokens do not count against the token budget.

It reads "a prefill token budget" as a budget for new prompts alone: prompts get the whole
``max_num_batched_tokens`` whatever the running sequences' decodes take, so a step with decodes
can go over the budget (the loop's invariant check reports it when it serves). The public tests
only fill the budget in a step without decodes, so it passes them all; the hidden test on decode
tokens catches it.
"""

from __future__ import annotations

import dataclasses

from engine_core.scheduler import ScheduledSeq
from solutions.a1.scheduler import ContinuousBatchingScheduler


class BudgetIgnoresDecodesScheduler(ContinuousBatchingScheduler):
    def schedule(self) -> list[ScheduledSeq]:
        ctx = self.ctx
        decodes = sum(not seq.is_prefill for seq in self.running)
        # The mistake: the decodes' tokens come on top of the budget instead of out of it.
        self.ctx = dataclasses.replace(ctx, max_num_batched_tokens=ctx.max_num_batched_tokens + decodes)
        try:
            return super().schedule()
        finally:
            self.ctx = ctx
