"""Hidden tests for a3 (chunked prefill): the handout's rules where the public tests only teach.

Not published (a ``test_*hidden*.py`` file): the grader runs them beside the public tests and
shows them to students once grades are published. Each one catches a mistake that passes every
public test. They call the hooks directly, with no model, like the public tests, whose helpers
they reuse; ``run_and_end`` below also plays the loop's ``finish`` call.
"""

from __future__ import annotations

import pytest

from engine_core.block_allocator import BlockAllocator
from engine_core.scheduler import ScheduledSeq, Scheduler, SchedulerContext, Sequence, SequenceStatus

from .test_a3_public import by_name, make_seq, run, steps


def context(max_num_batched_tokens: int = 64, chunked_prefill_size: int = 16, max_num_seqs: int = 4,
            num_blocks: int = 64) -> SchedulerContext:
    """The public tests' context (blocks of 4), with other budgets, more sequences or a smaller pool."""
    return SchedulerContext(BlockAllocator(num_blocks), block_size=4, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max_num_batched_tokens, max_model_len=128,
                            chunked_prefill_size=chunked_prefill_size)


def end(scheduler: Scheduler, seq: Sequence, reason: str = "length") -> None:
    """What the loop does when a sequence ends, or its client goes away: mark it, call finish."""
    seq.status = SequenceStatus.FINISHED
    seq.finish_reason = reason
    scheduler.finish(seq)


def run_and_end(scheduler: Scheduler, plan: list[ScheduledSeq]) -> None:
    """The rest of the loop's step: run the plan, finish the sequences that reached max_tokens."""
    run(plan)
    for entry in plan:
        if len(entry.seq.output_ids) == entry.seq.params.max_tokens:
            end(scheduler, entry.seq)


def decoding(scheduler: Scheduler, *names: str) -> None:
    """Add short requests and run steps until each has its first token: from the next step on, they decode."""
    seqs = [make_seq(name, 3, max_tokens=20) for name in names]
    for seq in seqs:
        scheduler.add(seq)
    for _ in range(3 * len(seqs)):
        if all(seq.output_ids for seq in seqs):
            return
        run(scheduler.schedule())
    assert all(seq.output_ids for seq in seqs), "short prompts alone did not get their first tokens"


def test_decodes_run_even_when_prompt_chunks_could_fill_the_whole_step(scheduler_cls):
    """Decodes first: when the step budget is no larger than the prompt budget, chunks get what decodes leave."""
    scheduler = scheduler_cls(context(max_num_batched_tokens=16, chunked_prefill_size=16))
    decoding(scheduler, "a", "b")
    scheduler.add(make_seq("long", 40))
    assert steps(scheduler, 2) == [{"a": 1, "b": 1, "long": 14}, {"a": 1, "b": 1, "long": 14}]


@pytest.mark.parametrize("max_num_batched_tokens, chunk", [
    pytest.param(18, 14, id="tight-step-budget"),  # 4 decodes + 14 prompt tokens = 18
    pytest.param(64, 16, id="roomy-step-budget"),  # the decodes do not eat into the 16 prompt tokens
])
def test_decodes_count_against_the_step_budget_not_the_prompt_budget(scheduler_cls, max_num_batched_tokens, chunk):
    """Prompt tokens: min(chunked_prefill_size, max_num_batched_tokens - decode tokens)."""
    scheduler = scheduler_cls(context(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=8))
    decoding(scheduler, "a", "b", "c", "d")
    scheduler.add(make_seq("long", 40))
    assert by_name(scheduler.schedule()) == {"a": 1, "b": 1, "c": 1, "d": 1, "long": chunk}


def test_no_chunk_at_all_when_decodes_take_the_whole_step(scheduler_cls):
    """A step with no budget left for prompts has no prompt entry (a chunk of 0 tokens is not a chunk)."""
    scheduler = scheduler_cls(context(max_num_batched_tokens=2, max_num_seqs=8))
    decoding(scheduler, "a", "b")
    scheduler.add(make_seq("next", 4))
    assert by_name(scheduler.schedule()) == {"a": 1, "b": 1}


def test_a_started_prompt_continues_before_a_new_one_is_admitted(scheduler_cls, ctx):
    """A partially prefilled prompt gets the budget first: it holds KV and its client waits for a first token."""
    scheduler = scheduler_cls(ctx)  # 16 prompt tokens per step
    scheduler.add(make_seq("long", 40))
    run(scheduler.schedule())
    scheduler.add(make_seq("new", 4))
    assert steps(scheduler, 2) == [{"long": 16}, {"long": 8, "new": 4}]


def test_two_long_prompts_are_prefilled_one_after_the_other(scheduler_cls, ctx):
    """First come, first served: the older prompt's chunks come first; the newer one starts in what it leaves."""
    scheduler = scheduler_cls(ctx)
    scheduler.add(make_seq("first", 40))
    scheduler.add(make_seq("second", 40))
    assert steps(scheduler, 5) == [{"first": 16}, {"first": 16}, {"first": 8, "second": 8},
                                   {"first": 1, "second": 16}, {"first": 1, "second": 16}]


def test_the_last_prompt_token_counts_against_the_prompt_budget(scheduler_cls, ctx):
    """A prompt with one token left is not decoding yet (though ``seq.is_prefill`` is False): it is a prompt token."""
    scheduler = scheduler_cls(ctx)  # 16 prompt tokens per step
    scheduler.add(make_seq("a", 17))
    scheduler.add(make_seq("b", 20))
    assert steps(scheduler, 2) == [{"a": 16}, {"a": 1, "b": 15}]


def test_the_oldest_waiting_request_is_not_overtaken_when_short_of_blocks(scheduler_cls):
    """Admission stays a1's: when the oldest waiting request's blocks are not free, nothing later starts."""
    scheduler = scheduler_cls(context(num_blocks=6))
    scheduler.add(make_seq("a", 8, max_tokens=8))  # 4 blocks
    scheduler.add(make_seq("oldest", 4, max_tokens=8))  # 3 blocks of the 2 left
    scheduler.add(make_seq("later", 2, max_tokens=2))  # 1 block
    assert by_name(scheduler.schedule()) == {"a": 8}


def test_aborting_a_prompt_between_chunks_frees_its_blocks_for_the_next(scheduler_cls, ctx):
    """finish() works mid-prompt: the blocks go back and the next request gets the budget in the very next step."""
    scheduler = scheduler_cls(ctx)
    long = make_seq("long", 40)
    scheduler.add(long)
    scheduler.add(make_seq("next", 4))
    run(scheduler.schedule())
    end(scheduler, long, "abort")
    assert long.block_table == [] and ctx.allocator.num_used == 0
    assert by_name(scheduler.schedule()) == {"next": 4}


LIMITS = {
    "tight": {"max_num_batched_tokens": 12, "chunked_prefill_size": 8, "max_num_seqs": 4, "num_blocks": 40},
    "prompt-budget-only": {"max_num_batched_tokens": 64, "chunked_prefill_size": 6, "max_num_seqs": 3},
    "step-as-small-as-prompt-budget": {"max_num_batched_tokens": 10, "chunked_prefill_size": 10},
}


def prompt_tokens(entry: ScheduledSeq) -> int:
    """How many of the entry's tokens are prompt tokens."""
    seq = entry.seq
    return max(min(seq.num_prompt_tokens - seq.num_computed_tokens, entry.num_tokens), 0)


def check_step(plan: list[ScheduledSeq], ctx: SchedulerContext) -> None:
    """The rules every step keeps, whatever the requests."""
    names = [entry.seq.request_id for entry in plan]
    assert len(names) == len(set(names)), f"a sequence is scheduled twice: {names}"
    assert len(plan) <= ctx.max_num_seqs, f"{len(plan)} sequences in one step"
    assert all(entry.num_tokens >= 1 for entry in plan), f"an entry with no token: {by_name(plan)}"
    prompt = sum(prompt_tokens(entry) for entry in plan)
    assert prompt <= ctx.chunked_prefill_size, f"{prompt} prompt tokens in one step: {by_name(plan)}"
    total = sum(entry.num_tokens for entry in plan)
    assert total <= ctx.max_num_batched_tokens, f"{total} tokens in one step: {by_name(plan)}"
    for entry in plan:
        written = entry.seq.num_computed_tokens + entry.num_tokens
        assert written <= len(entry.seq.block_table) * ctx.block_size, f"{entry.seq.request_id}'s blocks are short"


@pytest.mark.parametrize("limits", list(LIMITS.values()), ids=list(LIMITS))
def test_every_step_keeps_the_limits_while_requests_come_and_go(scheduler_cls, limits):
    """Budgets, max_num_seqs and block tables hold at every step; at the end every block is free."""
    ctx = context(**limits)
    scheduler = scheduler_cls(ctx)
    seqs: list[Sequence] = []
    for t in range(60):
        if t < 12:
            seqs.append(make_seq(f"r{t}", 30 if t % 4 == 1 else 3 + t % 5, max_tokens=2 + t % 4))
            scheduler.add(seqs[-1])
        if t == 5 and not seqs[1].is_finished:
            end(scheduler, seqs[1], "abort")  # a long prompt whose client went away midway
        plan = scheduler.schedule()
        check_step(plan, ctx)
        run_and_end(scheduler, plan)
    assert all(seq.is_finished for seq in seqs), [seq.request_id for seq in seqs if not seq.is_finished]
    assert scheduler.schedule() == []
    assert ctx.allocator.num_free == ctx.allocator.num_blocks and ctx.allocator.total_refs == 0
