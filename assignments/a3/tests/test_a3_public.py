"""Public tests for a3 (chunked prefill). Run: ``pytest assignments/a3/tests``.

They call your scheduler's hooks directly, with no model: ``run`` below plays the frozen loop's
part (advance what was computed, append a token when a sequence reaches its end). The context
(``conftest.py``) allows 64 tokens per step, of which at most 16 prompt tokens.
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


def steps(scheduler: Scheduler, count: int) -> list[dict[str, int]]:
    """Schedule and run ``count`` steps; what each step scheduled."""
    plans = []
    for _ in range(count):
        plan = scheduler.schedule()
        plans.append(by_name(plan))
        run(plan)
    return plans


def test_a_long_prompt_is_split_into_chunks_across_steps(scheduler_cls: type[Scheduler], ctx: SchedulerContext):
    scheduler = scheduler_cls(ctx)  # 16 prompt tokens per step
    scheduler.add(make_seq("long", 40))
    assert steps(scheduler, 4) == [{"long": 16}, {"long": 16}, {"long": 8}, {"long": 1}]


def test_running_decodes_go_on_while_a_long_prompt_is_chunked(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)
    scheduler.add(make_seq("a", 5))
    scheduler.add(make_seq("b", 6))
    run(scheduler.schedule())
    scheduler.add(make_seq("long", 40))
    assert steps(scheduler, 3) == [{"a": 1, "b": 1, "long": 16}, {"a": 1, "b": 1, "long": 16},
                                   {"a": 1, "b": 1, "long": 8}]


def test_prompt_tokens_of_a_step_stay_within_the_chunk_budget(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)  # 16 prompt tokens per step
    for name in ("s0", "s1", "s2"):
        scheduler.add(make_seq(name, 10))
    # s1 gets what s0 leaves of the budget; the next step finishes it and starts s2.
    assert steps(scheduler, 2) == [{"s0": 10, "s1": 6}, {"s0": 1, "s1": 4, "s2": 10}]


def test_a_chunked_sequence_samples_only_after_its_last_chunk(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)
    seq = make_seq("long", 40)
    scheduler.add(seq)
    for expected in (16, 16):
        assert by_name(plan := scheduler.schedule()) == {"long": expected}  # its next chunk, not one "decode" token
        run(plan)
        assert seq.output_ids == []
    run(scheduler.schedule())  # the last 8 prompt tokens: the loop samples its first token
    assert seq.output_ids == [7]


def test_kv_for_prompt_and_max_tokens_is_reserved_at_admission(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)
    seq = make_seq("long", 40, max_tokens=8)  # 48 tokens = 12 blocks of 4, although 16 run first
    scheduler.add(seq)
    scheduler.schedule()
    assert len(seq.block_table) == 12
    assert ctx.allocator.num_used == 12


def test_finished_sequences_free_their_blocks_and_make_room(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)  # 4 at once
    seqs = [make_seq(f"s{i}", 3) for i in range(5)]
    for seq in seqs:
        scheduler.add(seq)
    run(scheduler.schedule())
    held = list(seqs[1].block_table)
    seqs[1].status = SequenceStatus.FINISHED
    seqs[1].finish_reason = "stop"
    scheduler.finish(seqs[1])
    assert seqs[1].block_table == []
    assert held and all(ctx.allocator.ref_count(block) == 0 for block in held)
    assert by_name(scheduler.schedule()) == {"s0": 1, "s2": 1, "s3": 1, "s4": 3}


def test_nothing_to_do_returns_an_empty_plan(scheduler_cls, ctx):
    assert scheduler_cls(ctx).schedule() == []
