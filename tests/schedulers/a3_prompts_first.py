"""The a3 reference scheduler, except that prompt chunks come before the decodes.

It fills the prompt budget first and gives the running sequences' decodes what is left of
``max_num_batched_tokens``: when that budget is no larger than the prompt budget, a long
prompt's chunks take whole steps and the decodes stall behind them, which is what chunked
prefill is meant to stop. The public tests leave the step budget (64) far above the prompt
budget (16), so it passes them all; the hidden test on decodes with a small step budget catches it.
"""

from __future__ import annotations

from engine_core.scheduler import ScheduledSeq
from solutions.a3.scheduler import ChunkedPrefillScheduler


class PromptsFirstScheduler(ChunkedPrefillScheduler):
    def schedule(self) -> list[ScheduledSeq]:
        ctx = self.ctx
        # The mistake: prompts take their budget first, decodes get the rest.
        chunks = self.chunks(min(ctx.chunked_prefill_size, ctx.max_num_batched_tokens))
        left = ctx.max_num_batched_tokens - sum(entry.num_tokens for entry in chunks)
        return chunks + self.decodes()[:left]
