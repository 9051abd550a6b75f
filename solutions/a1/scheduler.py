"""a1: continuous batching.

Iteration-level scheduling (Orca): the batch is re-formed at every step instead of once per
group of requests. Each step

1. decodes every running sequence (one token each), and
2. admits waiting requests, oldest first, while the step has room: at most
   ``max_num_seqs`` running sequences, a prefill token budget (``max_num_batched_tokens``
   minus the decode tokens), and free KV blocks for the request's prompt + ``max_tokens``,
   reserved in full at admission so that a running sequence never runs out of KV.

New prompts are packed into the same forward as the decodes, and a finished sequence leaves
the batch (and frees its blocks) the moment it finishes, making room for the next request.
"""

from __future__ import annotations

from collections import deque

from engine_core.scheduler import ScheduledSeq, Scheduler, SchedulerContext, Sequence


class ContinuousBatchingScheduler(Scheduler):
    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        """Queue a new request behind the ones already waiting."""
        ### BEGIN SOLUTION
        self.waiting.append(seq)
        ### END SOLUTION

    def schedule(self) -> list[ScheduledSeq]:
        """Decode every running sequence and admit as many waiting ones as fit."""
        ### BEGIN SOLUTION
        plan: list[ScheduledSeq] = []
        budget = self.ctx.max_num_batched_tokens
        for seq in self.running:
            # One token for a decode; the rest of the prompt for one too long for a single step.
            n = min(seq.num_uncomputed_tokens, budget)
            if n > 0:
                plan.append(ScheduledSeq(seq, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.ctx.max_num_seqs:
            seq = self.waiting[0]
            # A prompt longer than the whole budget runs alone, a budget's worth per step.
            fits = seq.num_uncomputed_tokens <= budget or not plan
            blocks = self.ctx.blocks_needed(seq.max_num_tokens)
            if not fits or blocks > self.ctx.allocator.num_free:
                break  # first come, first served: later requests do not overtake the oldest
            self.waiting.popleft()
            seq.block_table = self.ctx.allocator.allocate(blocks)
            self.running.append(seq)
            n = min(seq.num_uncomputed_tokens, budget)
            plan.append(ScheduledSeq(seq, n))
            budget -= n
        return plan
        ### END SOLUTION

    def finish(self, seq: Sequence) -> None:
        """Forget a finished (or aborted) sequence and free its blocks."""
        ### BEGIN SOLUTION
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.ctx.allocator.free(seq.block_table)
        seq.block_table = []
        ### END SOLUTION
