"""a4's fixture: a small, model-free scheduler context (``scheduler_cls`` comes from the
conftest one folder up, shared by every assignment)."""

from __future__ import annotations

import pytest

from engine_core.block_allocator import BlockAllocator
from engine_core.scheduler import SchedulerContext


@pytest.fixture
def ctx() -> SchedulerContext:
    """A pool of 16 blocks of 4 tokens (64 tokens in all), 4 sequences at once, 64 tokens per step."""
    return SchedulerContext(
        allocator=BlockAllocator(16), block_size=4, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=64
    )
