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
        # YOUR CODE HERE
        raise NotImplementedError("a1: ContinuousBatchingScheduler.add: queue a new request behind the ones already waiting (see the a1 handout)")

    def schedule(self) -> list[ScheduledSeq]:
        """Decode every running sequence and admit as many waiting ones as fit."""
        # YOUR CODE HERE
        raise NotImplementedError("a1: ContinuousBatchingScheduler.schedule: decode every running sequence and admit as many waiting ones as fit (see the a1 handout)")

    def finish(self, seq: Sequence) -> None:
        """Forget a finished (or aborted) sequence and free its blocks."""
        # YOUR CODE HERE
        raise NotImplementedError("a1: ContinuousBatchingScheduler.finish: forget a finished (or aborted) sequence and free its blocks (see the a1 handout)")
