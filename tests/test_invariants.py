"""The copy-on-write check: a step may write KV only into blocks its sequence holds alone."""

from __future__ import annotations

import pytest

from engine_core import Engine, SamplingParams
from engine_core.block_allocator import BlockAllocator
from engine_core.invariants import SchedulerInvariantError, check_plan
from engine_core.loop import EngineLoop
from engine_core.scheduler import ScheduledSeq, SchedulerContext, Sequence

from .loop_driver import run_requests
from .schedulers.prefix_cache_writes_shared import PrefixCacheWritesSharedScheduler

BLOCK = 4


def make_ctx() -> SchedulerContext:
    return SchedulerContext(BlockAllocator(16), BLOCK, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=64)


def make_seq(request_id: str, table: list[int], num_computed: int, num_prompt: int = 8) -> Sequence:
    seq = Sequence(request_id, list(range(1, num_prompt + 1)), SamplingParams(max_tokens=8), seed=0)
    seq.block_table, seq.num_computed_tokens = table, num_computed
    return seq


def test_writing_into_a_block_another_sequence_holds_names_both():
    ctx = make_ctx()
    first = make_seq("first", ctx.allocator.allocate(2), num_computed=8)
    ctx.allocator.share(first.block_table)
    # Shares both blocks but has computed only the first: its prefill writes 4..7 into block 1.
    second = make_seq("second", list(first.block_table), num_computed=4)
    with pytest.raises(SchedulerInvariantError) as err:
        check_plan([ScheduledSeq(second, 4)], ctx, live=[first, second])
    message = str(err.value)
    assert "sequence 'second' writes KV at positions 4..7 into block 1" in message
    assert "shared with sequence 'first'" in message


def test_writing_into_a_block_the_cache_holds_names_the_cache():
    ctx = make_ctx()
    cached = ctx.allocator.allocate(1)
    ctx.allocator.share(cached)
    seq = make_seq("cached-prefix", cached + ctx.allocator.allocate(1), num_computed=3)
    # Its prefill starts at position 3, the last slot of the cached block.
    with pytest.raises(SchedulerInvariantError) as err:
        check_plan([ScheduledSeq(seq, 5)], ctx, live=[seq], held=cached)
    message = str(err.value)
    assert f"sequence 'cached-prefix' writes KV at positions 3..3 into block {cached[0]}" in message
    assert "the scheduler's cache (held_blocks())" in message


def test_draft_tokens_count_as_writes():
    ctx = make_ctx()
    shared = ctx.allocator.allocate(2)
    ctx.allocator.share(shared[1:])
    seq = make_seq("drafting", shared, num_computed=3, num_prompt=4)
    # Its last prompt token (position 3) fits its own block 0; the drafts land at 4..5 in shared block 1.
    with pytest.raises(SchedulerInvariantError, match=f"positions 4..5 into block {shared[1]}"):
        check_plan([ScheduledSeq(seq, 1, draft_tokens=[7, 8])], ctx, live=[seq], held=shared[1:])


def test_sharing_only_computed_blocks_passes():
    ctx = make_ctx()
    first = make_seq("first", ctx.allocator.allocate(2), num_computed=8)
    ctx.allocator.share(first.block_table[:1])
    # Shares the block of positions 0..3, already computed; writes 4..7 into a block of its own.
    second = make_seq("second", first.block_table[:1] + ctx.allocator.allocate(1), num_computed=4)
    check_plan([ScheduledSeq(second, 4)], ctx, live=[first, second])


def test_a_prefix_cache_that_writes_into_a_shared_block_fails_its_request(engine: Engine, chat_prompts):
    # A block-aligned prompt, run twice: the second run finds every block cached.
    prompt = chat_prompts[2][:3 * engine.block_size]
    loop = EngineLoop(engine, PrefixCacheWritesSharedScheduler)
    loop.start()
    try:
        params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
        [first] = run_requests(loop, [prompt], params)
        [second] = run_requests(loop, [prompt], params)
    finally:
        loop.stop()
        engine.allocator.reset()
    assert first.error is None
    assert second.finish_reason == "error"
    assert f"writes KV at positions {len(prompt) - 1}..{len(prompt) - 1}" in second.error
    assert "shared with the scheduler's cache (held_blocks())" in second.error
