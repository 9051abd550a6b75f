"""Hidden tests for a1 (continuous batching): the handout's rules where the public tests only teach.

Not published (a ``test_*hidden*.py`` file): the grader runs them beside the public tests and
shows them to students once grades are published. Each one catches a mistake that passes every
public test. They call the hooks directly, with no model, like the public tests, whose helpers
they reuse; ``step`` below also plays the loop's ``finish`` call.
"""

from __future__ import annotations

import pytest

from engine_core.block_allocator import BlockAllocator
from engine_core.scheduler import ScheduledSeq, Scheduler, SchedulerContext, Sequence, SequenceStatus

from .test_a1_public import by_name, make_seq, run


def context(num_blocks: int = 64, max_num_batched_tokens: int = 64) -> SchedulerContext:
    """The public tests' context (blocks of 4, 4 sequences at once), with a smaller pool or budget."""
    return SchedulerContext(BlockAllocator(num_blocks), block_size=4, max_num_seqs=4,
                            max_num_batched_tokens=max_num_batched_tokens, max_model_len=128)


def end(scheduler: Scheduler, seq: Sequence, reason: str = "length") -> None:
    """What the loop does when a sequence ends, or its client goes away: mark it, call finish."""
    seq.status = SequenceStatus.FINISHED
    seq.finish_reason = reason
    scheduler.finish(seq)


def step(scheduler: Scheduler) -> list[ScheduledSeq]:
    """One step of the loop: schedule, run, and finish the sequences that reached max_tokens."""
    plan = scheduler.schedule()
    run(plan)
    for entry in plan:
        if len(entry.seq.output_ids) == entry.seq.params.max_tokens:
            end(scheduler, entry.seq)
    return plan


@pytest.mark.parametrize("limit, requests, admitted", [
    # 6 blocks: "a" takes 4; "oldest" needs 3 of the 2 left; "later" needs 1.
    pytest.param({"num_blocks": 6}, [("a", 8, 8), ("oldest", 4, 8), ("later", 2, 2)], {"a": 8},
                 id="short-of-blocks"),
    # 64 tokens: "a" and "b" take 60; "oldest" needs 30 of the 4 left; "later" needs 2.
    pytest.param({}, [("a", 30, 8), ("b", 30, 8), ("oldest", 30, 8), ("later", 2, 8)], {"a": 30, "b": 30},
                 id="short-of-tokens"),
])
def test_later_requests_do_not_overtake_the_oldest_when_it_does_not_fit(scheduler_cls, limit, requests, admitted):
    """Oldest first: when the oldest waiting request does not fit, admitting stops for this step."""
    scheduler = scheduler_cls(context(**limit))
    for name, prompt_len, max_tokens in requests:
        scheduler.add(make_seq(name, prompt_len, max_tokens))
    assert by_name(scheduler.schedule()) == admitted


def test_decode_tokens_count_against_the_token_budget(scheduler_cls, ctx):
    """The token budget holds for the whole step: decodes plus new prompts."""
    scheduler = scheduler_cls(ctx)  # 64 tokens per step
    for name, prompt_len in [("a", 30), ("b", 30), ("c", 63)]:
        scheduler.add(make_seq(name, prompt_len))
    run(scheduler.schedule())  # a and b
    assert by_name(scheduler.schedule()) == {"a": 1, "b": 1}  # c would make 2 + 63 = 65 tokens


def test_running_sequences_never_exceed_max_num_seqs_as_requests_come_and_go(scheduler_cls, ctx):
    """At most max_num_seqs sequences run at once, step after step, while requests arrive, end or are aborted."""
    scheduler = scheduler_cls(ctx)  # 4 at once
    seqs: list[Sequence] = []
    for t in range(12):
        for k in range(2):
            seqs.append(make_seq(f"r{t}.{k}", 3 + k, max_tokens=2 + (t + k) % 4))
            scheduler.add(seqs[-1])
        if t % 3 == 2:
            end(scheduler, seqs[-1], "abort")  # its client went away before it started
        step(scheduler)
        running = [seq.request_id for seq in seqs if seq.block_table and not seq.is_finished]
        assert len(running) <= ctx.max_num_seqs, f"step {t}: {len(running)} sequences hold blocks: {running}"


def test_reserved_blocks_cover_every_token_the_sequence_runs(scheduler_cls, ctx):
    """Blocks for prompt + max_tokens, rounded up, are reserved: the table covers the last decode too."""
    scheduler = scheduler_cls(ctx)  # blocks of 4
    seq = make_seq("a", 6, max_tokens=8)  # writes positions 0..12: 4 blocks, not 14 // 4 = 3
    scheduler.add(seq)
    for _ in range(seq.params.max_tokens):
        plan = scheduler.schedule()
        written = seq.num_computed_tokens + plan[0].num_tokens
        assert written <= len(seq.block_table) * ctx.block_size, (
            f"{len(seq.block_table)} blocks cannot hold the {written} tokens written so far")
        run(plan)


def test_a_prompt_longer_than_the_token_budget_runs_alone_a_budget_at_a_time(scheduler_cls):
    """A prompt over the budget is admitted when nothing else runs and gets min(left, budget) tokens per step."""
    scheduler = scheduler_cls(context(max_num_batched_tokens=16))
    scheduler.add(make_seq("long", 40))
    scheduler.add(make_seq("next", 4))
    plans = []
    for _ in range(3):
        plans.append(by_name(plan := scheduler.schedule()))
        run(plan)
    assert plans == [{"long": 16}, {"long": 16}, {"long": 8, "next": 4}]


def test_finishing_a_request_that_still_waits_drops_it_and_frees_nothing(scheduler_cls, ctx):
    """finish() of a waiting request (aborted before admission) removes it from the queue; it had no blocks."""
    scheduler = scheduler_cls(ctx)  # 4 at once
    seqs = [make_seq(f"s{i}", 3) for i in range(5)]
    for seq in seqs:
        scheduler.add(seq)
    run(scheduler.schedule())  # s0..s3 run, s4 waits
    used = ctx.allocator.num_used
    end(scheduler, seqs[4], "abort")
    assert seqs[4].block_table == [] and ctx.allocator.num_used == used
    end(scheduler, seqs[0], "stop")  # room for one more: the aborted s4 must not take it
    assert by_name(scheduler.schedule()) == {"s1": 1, "s2": 1, "s3": 1}


def test_once_every_request_has_ended_nothing_is_scheduled_and_every_block_is_free(scheduler_cls):
    """Blocks are freed exactly once, whatever ended the request; then the pool is whole and the plan empty."""
    ctx = context(num_blocks=12)  # too few for all at once: blocks are freed and reused
    scheduler = scheduler_cls(ctx)
    seqs = [make_seq(f"s{i}", 3 + i, max_tokens=2 + i % 3) for i in range(8)]
    for seq in seqs:
        scheduler.add(seq)
    for _ in range(40):
        for entry in step(scheduler):
            if entry.seq.request_id in ("s2", "s5") and not entry.seq.is_finished:
                end(scheduler, entry.seq, "abort")  # its client went away mid-request
        if all(seq.is_finished for seq in seqs):
            break
    assert all(seq.is_finished for seq in seqs), [seq.request_id for seq in seqs if not seq.is_finished]
    assert scheduler.schedule() == []
    assert ctx.allocator.num_free == ctx.allocator.num_blocks and ctx.allocator.total_refs == 0
    assert all(seq.block_table == [] for seq in seqs)
