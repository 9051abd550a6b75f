"""The a3 reference scheduler, except that the prompt budget ignores the step's decode tokens.

It gives prompts ``chunked_prefill_size`` tokens whatever the decodes take, so a step whose
budget ``max_num_batched_tokens`` is close to the prompt budget goes over it (the loop's
invariant check reports it when it serves). The public tests leave the step budget far above
the prompt budget, so it passes them all; the hidden test with a tight step budget catches it.
"""

from __future__ import annotations

from engine_core.scheduler import ScheduledSeq
from solutions.a3.scheduler import ChunkedPrefillScheduler


class BudgetIgnoresDecodesScheduler(ChunkedPrefillScheduler):
    def schedule(self) -> list[ScheduledSeq]:
        # The mistake: min(chunked_prefill_size, max_num_batched_tokens - decodes) is what is left.
        return self.decodes() + self.chunks(self.ctx.chunked_prefill_size)
