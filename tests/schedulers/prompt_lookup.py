"""Continuous batching with speculative decoding by prompt lookup (n-gram drafts).

It exists so that the loop's draft verification and its draft counters, and the grader's
speculative-decoding gates, can be tested without a5's reference solution. It is the
blocks-on-demand scheduler of ``preempt_on_demand.py`` plus drafts: each decode proposes up to
``MAX_DRAFT_TOKENS`` tokens, the ones that followed the most recent earlier occurrence of the
sequence's last n-gram (``MAX_NGRAM`` down to ``MIN_NGRAM`` tokens) in its own prompt and output.
Blocks for the drafts are allocated before the step, when free (drafts never preempt anyone),
and the blocks that only rejected drafts used are freed in ``on_step_done``. Greedy outputs are
those of decoding without drafts: the loop keeps only drafts that match what the model samples.
"""

from __future__ import annotations

from engine_core.scheduler import ScheduledSeq, Sequence, StepResult

from .preempt_on_demand import PreemptOnDemandScheduler

MAX_DRAFT_TOKENS = 4
MAX_NGRAM = 3
MIN_NGRAM = 2


def propose_drafts(tokens: list[int], max_drafts: int) -> list[int]:
    """What followed the latest earlier occurrence of the longest matching suffix n-gram of ``tokens``."""
    if max_drafts <= 0:
        return []
    for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
        suffix = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start:start + n] == suffix:
                return tokens[start + n:start + n + max_drafts]
    return []


class PromptLookupScheduler(PreemptOnDemandScheduler):
    def on_step_done(self, results: list[StepResult]) -> None:
        """Free the blocks that held only rejected drafts."""
        for result in results:
            seq = result.seq
            # The newest token, position num_tokens - 1, is written next step; nothing after it.
            keep = self.ctx.blocks_needed(seq.num_tokens)
            if len(seq.block_table) > keep:
                self.ctx.allocator.free(seq.block_table[keep:])
                del seq.block_table[keep:]

    def _entry(self, seq: Sequence, n: int, budget: int) -> ScheduledSeq:
        if seq.num_uncomputed_tokens != 1:
            return ScheduledSeq(seq, n)  # drafts follow only a decode token
        # A draft past the last token max_tokens allows would never be used.
        room = min(MAX_DRAFT_TOKENS, budget - n, seq.params.max_tokens - len(seq.output_ids) - 1)
        drafts = propose_drafts(seq.prompt_ids + seq.output_ids, room)
        while drafts and not self._grow(seq, seq.num_tokens + len(drafts)):
            drafts.pop()
        return ScheduledSeq(seq, n, drafts)
