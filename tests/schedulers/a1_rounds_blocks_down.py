"""The a1 reference scheduler, except that it rounds the blocks it reserves down instead of up.

It reserves ``(prompt + max_tokens) // block_size`` blocks: one block short whenever that length
is not a multiple of the block size, so the last decodes of a long enough sequence write past
its block table (the loop's invariant check reports it when it serves). The public test on
reservation uses a length of exactly 4 blocks, so it passes every public test; the hidden test
that runs a sequence to its last decode catches it.
"""

from __future__ import annotations

import dataclasses

from engine_core.scheduler import SchedulerContext
from solutions.a1.scheduler import ContinuousBatchingScheduler


class _RoundedDownContext(SchedulerContext):
    def blocks_needed(self, num_tokens: int) -> int:
        return num_tokens // self.block_size  # the mistake: should round up


class RoundsBlocksDownScheduler(ContinuousBatchingScheduler):
    def __init__(self, ctx: SchedulerContext) -> None:
        fields = {field.name: getattr(ctx, field.name) for field in dataclasses.fields(ctx)}
        super().__init__(_RoundedDownContext(**fields))
