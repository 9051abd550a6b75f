"""The a1 reference scheduler, except that later requests overtake the oldest when it does not fit.

It admits oldest first up to the first request that does not fit (too few free blocks, or too
little of the step's token budget left), then, instead of stopping there, looks further down
the queue and admits every later request that does fit. Steps are fuller, but a large request
can wait forever behind a stream of small ones: the handout's "do not let later requests
overtake it". It passes every public a1 test; the hidden test on overtaking catches it.
"""

from __future__ import annotations

from engine_core.scheduler import ScheduledSeq
from solutions.a1.scheduler import ContinuousBatchingScheduler


class OvertakingScheduler(ContinuousBatchingScheduler):
    def schedule(self) -> list[ScheduledSeq]:
        plan = super().schedule()
        budget = self.ctx.max_num_batched_tokens - sum(entry.num_tokens for entry in plan)
        for seq in list(self.waiting):  # the mistake: skip the oldest, try the ones behind it
            blocks = self.ctx.blocks_needed(seq.max_num_tokens)
            room = len(self.running) < self.ctx.max_num_seqs and seq.num_uncomputed_tokens <= budget
            if room and blocks <= self.ctx.allocator.num_free:
                self.waiting.remove(seq)
                seq.block_table = self.ctx.allocator.allocate(blocks)
                self.running.append(seq)
                plan.append(ScheduledSeq(seq, seq.num_uncomputed_tokens))
                budget -= seq.num_uncomputed_tokens
        return plan
