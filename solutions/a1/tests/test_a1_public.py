"""Public tests for a1 (continuous batching). Run: ``pytest assignments/a1/tests``.

They call your scheduler's hooks directly, with no model: ``run`` below plays the frozen loop's
part (advance what was computed, append a token when a sequence reaches its end).
"""

from __future__ import annotations

from engine_core.sampling_params import SamplingParams
from engine_core.scheduler import ScheduledSeq, Scheduler, SchedulerContext, Sequence, SequenceStatus


def make_seq(name: str, prompt_len: int, max_tokens: int = 8) -> Sequence:
    return Sequence(name, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens), seed=0)


def run(plan: list[ScheduledSeq]) -> None:
    """What the loop does after a forward: mark computed tokens, append one token at the end."""
    for entry in plan:
        entry.seq.status = SequenceStatus.RUNNING
        entry.seq.num_computed_tokens += entry.num_tokens
        if entry.seq.num_computed_tokens == entry.seq.num_tokens:
            entry.seq.output_ids.append(7)


def by_name(plan: list[ScheduledSeq]) -> dict[str, int]:
    return {entry.seq.request_id: entry.num_tokens for entry in plan}


def test_first_step_prefills_every_waiting_request_together(scheduler_cls: type[Scheduler], ctx: SchedulerContext):
    scheduler = scheduler_cls(ctx)
    for name, length in [("a", 5), ("b", 9), ("c", 3)]:
        scheduler.add(make_seq(name, length))
    assert by_name(scheduler.schedule()) == {"a": 5, "b": 9, "c": 3}


def test_decodes_and_new_prefills_share_a_step(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)
    scheduler.add(make_seq("a", 5))
    scheduler.add(make_seq("b", 6))
    run(scheduler.schedule())
    scheduler.add(make_seq("c", 4))
    assert by_name(scheduler.schedule()) == {"a": 1, "b": 1, "c": 4}


def test_kv_for_prompt_and_max_tokens_is_reserved_at_admission(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)
    seq = make_seq("a", 6, max_tokens=10)  # 16 tokens = 4 blocks of 4
    scheduler.add(seq)
    scheduler.schedule()
    assert len(seq.block_table) == 4
    assert ctx.allocator.num_used == 4


def test_at_most_max_num_seqs_run(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)
    for i in range(6):
        scheduler.add(make_seq(f"s{i}", 3))
    plan = scheduler.schedule()
    assert sorted(by_name(plan)) == ["s0", "s1", "s2", "s3"]  # oldest first
    run(plan)
    assert sorted(by_name(scheduler.schedule())) == ["s0", "s1", "s2", "s3"]


def test_prefill_token_budget_is_respected(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)  # budget 64 tokens per step
    for i in range(3):
        scheduler.add(make_seq(f"s{i}", 30))
    plan = scheduler.schedule()
    assert by_name(plan) == {"s0": 30, "s1": 30}
    assert sum(e.num_tokens for e in plan) <= ctx.max_num_batched_tokens


def test_finished_sequences_leave_at_once_and_free_their_blocks(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)
    seqs = [make_seq(f"s{i}", 3) for i in range(5)]
    for seq in seqs:
        scheduler.add(seq)
    run(scheduler.schedule())
    held = list(seqs[1].block_table)
    seqs[1].status = SequenceStatus.FINISHED
    seqs[1].finish_reason = "stop"
    scheduler.finish(seqs[1])
    assert seqs[1].block_table == []
    assert held and all(ctx.allocator.ref_count(block) == 0 for block in held)  # every block it held is free
    # s1's place goes to the waiting s4, in the very next step.
    assert by_name(scheduler.schedule()) == {"s0": 1, "s2": 1, "s3": 1, "s4": 3}


def test_a_request_that_does_not_fit_in_free_blocks_waits(scheduler_cls):
    from engine_core.block_allocator import BlockAllocator

    small = SchedulerContext(BlockAllocator(5), block_size=4, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=64)
    scheduler = scheduler_cls(small)
    scheduler.add(make_seq("big", 8, max_tokens=8))  # 4 blocks
    scheduler.add(make_seq("next", 4, max_tokens=4))  # 2 blocks: only 1 left
    assert by_name(scheduler.schedule()) == {"big": 8}


def test_nothing_to_do_returns_an_empty_plan(scheduler_cls, ctx):
    assert scheduler_cls(ctx).schedule() == []
