"""Fixtures for the a1 tests: the scheduler under test and a small, model-free context.

``ENGINE_CORE_IMPL=solution`` runs the tests against the reference solution instead of your
``assignments/a1/scheduler.py`` (instructors use this; the grader sets it).
"""

from __future__ import annotations

import os

import pytest

from engine_core.block_allocator import BlockAllocator
from engine_core.scheduler import Scheduler, SchedulerContext
from engine_core.scheduler_loader import load_scheduler


@pytest.fixture
def scheduler_cls() -> type[Scheduler]:
    return load_scheduler("a1", os.environ.get("ENGINE_CORE_IMPL", "student"))


@pytest.fixture
def ctx() -> SchedulerContext:
    return SchedulerContext(
        allocator=BlockAllocator(64), block_size=4, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=128
    )
