"""a0: the baseline. First come, first served, one request at a time.

The oldest waiting request runs alone: its whole prompt in one step, then one decode token per
step until it finishes; only then does the next request start. Simple and correct, and slow:
every other client waits, and each step uses a tiny fraction of the hardware.
"""

from __future__ import annotations

from collections import deque

from engine_core.scheduler import ScheduledSeq, Scheduler, SchedulerContext, Sequence


class FCFSScheduler(Scheduler):
    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        self.waiting: deque[Sequence] = deque()
        self.current: Sequence | None = None

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> list[ScheduledSeq]:
        if self.current is None:
            if not self.waiting:
                return []
            seq = self.waiting[0]
            blocks = self.ctx.blocks_needed(seq.max_num_tokens)
            if blocks > self.ctx.allocator.num_free:
                return []  # cannot happen with an empty pool unless the request is larger than the pool
            self.waiting.popleft()
            seq.block_table = self.ctx.allocator.allocate(blocks)
            self.current = seq
        seq = self.current
        # Prefill: the whole prompt (capped by the step budget); decode: the newest token.
        return [ScheduledSeq(seq, min(seq.num_uncomputed_tokens, self.ctx.max_num_batched_tokens))]

    def finish(self, seq: Sequence) -> None:
        if seq is self.current:
            self.current = None
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.ctx.allocator.free(seq.block_table)
        seq.block_table = []
