"""Public tests for a2 (paged memory, preemption by recompute). Run: ``pytest assignments/a2/tests``.

They call your scheduler's hooks directly, with no model. ``FakeLoop`` below plays the frozen
loop's part: it checks every plan as the loop does (block tables cover what runs, no block
leaked or lost), advances what was computed, appends a token when a sequence reaches its end,
and calls ``finish`` when a sequence has its ``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable

from engine_core.block_allocator import BlockAllocator
from engine_core.invariants import check_no_leaks, check_plan, check_released
from engine_core.sampling_params import SamplingParams
from engine_core.scheduler import Scheduler, SchedulerContext, Sequence, SequenceStatus


def context(num_blocks: int, max_num_seqs: int = 4, max_model_len: int = 64) -> SchedulerContext:
    """Blocks of 4 tokens and a budget of 64 tokens per step, like the ``ctx`` fixture, with another pool."""
    return SchedulerContext(BlockAllocator(num_blocks), block_size=4, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=64, max_model_len=max_model_len)


class FakeLoop:
    """The loop's part around a scheduler, without a model."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.ctx = scheduler.ctx
        self.seqs: dict[str, Sequence] = {}
        self.preempted: list[str] = []  # every preemption, in order

    def add(self, name: str, prompt_len: int, max_tokens: int = 8) -> Sequence:
        seq = Sequence(name, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens), seed=0)
        self.scheduler.add(seq)
        self.seqs[name] = seq
        return seq

    def live(self) -> list[Sequence]:
        return [seq for seq in self.seqs.values() if not seq.is_finished]

    def step(self) -> dict[str, int]:
        """One step; returns the plan as {request id: tokens scheduled}."""
        computed = {seq.request_id: seq.num_computed_tokens for seq in self.live()}
        plan = self.scheduler.schedule()
        victims = [s.request_id for s in self.live() if s.num_computed_tokens < computed[s.request_id]]
        self.preempted += victims
        planned = [entry.seq.request_id for entry in plan]
        assert not set(victims) & set(planned), f"{victims} preempted in this step but still in its plan {planned}"
        check_plan(plan, self.ctx, live=self.live())
        check_no_leaks(self.ctx.allocator, self.live(), [])
        for entry in plan:
            seq = entry.seq
            seq.status = SequenceStatus.RUNNING
            seq.num_computed_tokens += entry.num_tokens
            if seq.num_computed_tokens == seq.num_tokens:
                seq.output_ids.append(7)
        for entry in plan:
            if len(entry.seq.output_ids) == entry.seq.params.max_tokens:
                self.end(entry.seq)
        return {entry.seq.request_id: entry.num_tokens for entry in plan}

    def end(self, seq: Sequence, reason: str = "length") -> None:
        """A sequence ended, or its client went away: mark it and call finish."""
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.scheduler.finish(seq)
        check_released(seq)
        check_no_leaks(self.ctx.allocator, self.live(), [])

    def run_until(self, done: Callable[[dict[str, int]], bool], max_steps: int = 200) -> dict[str, int]:
        """Step until ``done(plan)`` is true; returns that step's plan."""
        for _ in range(max_steps):
            plan = self.step()
            if done(plan):
                return plan
        left = [seq.request_id for seq in self.live()]
        raise AssertionError(f"not done after {max_steps} steps; still waiting or running: {left}")

    def run_to_end(self, max_steps: int = 200) -> None:
        self.run_until(lambda plan: not self.live(), max_steps)


def test_a_request_is_admitted_with_blocks_for_its_prompt_only(scheduler_cls: type[Scheduler], ctx: SchedulerContext):
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", 6, max_tokens=10)  # 6 tokens: 2 blocks of 4 (a1 reserved 4, for 16 tokens)
    loop.step()
    assert len(seq.block_table) == 2
    assert ctx.allocator.num_used == 2


def test_a_decode_gets_a_new_block_only_when_its_next_token_crosses_into_one(scheduler_cls, ctx):
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", 6, max_tokens=9)
    tables = []
    while not seq.is_finished:
        loop.step()
        tables.append(len(seq.block_table))
    # The prompt writes positions 0-5, then each decode one more: 6 7 | 8 9 10 11 | 12 13 (blocks of 4).
    # The last step ends it (9 tokens), and finish() frees every block.
    assert tables == [2, 2, 2, 3, 3, 3, 3, 4, 0]


def test_admission_leaves_the_watermark_of_free_blocks(scheduler_cls, ctx):
    scheduler = scheduler_cls(ctx)  # 16 blocks
    watermark = scheduler.watermark_blocks
    loop = FakeLoop(scheduler)
    loop.add("first", 4 * (16 - watermark - 2) - 1)  # leaves watermark + 2 blocks free
    loop.add("fits", 7)  # 2 blocks: leaves exactly the watermark free
    loop.add("too-big", 3)  # 1 more block would dip below it
    assert loop.step() == {"first": 4 * (16 - watermark - 2) - 1, "fits": 7}
    assert ctx.allocator.num_free == watermark


def test_when_a_decode_finds_no_free_block_the_newest_running_sequence_is_preempted(scheduler_cls):
    ctx = context(num_blocks=8)
    loop = FakeLoop(scheduler_cls(ctx))
    older, newer = loop.add("older", 5, max_tokens=20), loop.add("newer", 5, max_tokens=20)
    # Both grow a block every 4 tokens: at position 16, "older" needs a 5th block and none is free.
    plan = loop.run_until(lambda plan: bool(loop.preempted))
    assert loop.preempted == ["newer"]
    assert plan == {"older": 1}
    assert newer.status is SequenceStatus.WAITING and newer.num_computed_tokens == 0
    assert newer.block_table == [] and len(older.block_table) == 5
    assert len(newer.output_ids) == 12  # what it generated is kept: it will be recomputed, not restarted


def test_a_preempted_sequence_is_recomputed_from_its_prompt_and_output(scheduler_cls):
    ctx = context(num_blocks=8)
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("older", 5, max_tokens=20)
    newer = loop.add("newer", 5, max_tokens=20)
    loop.run_until(lambda plan: bool(loop.preempted))
    tokens = newer.num_tokens  # prompt + output so far
    plan = loop.run_until(lambda plan: "newer" in plan)  # once "older" has finished and freed its blocks
    assert plan == {"newer": tokens}  # all of them, in one step: its KV was freed
    assert newer.num_computed_tokens == tokens and newer.num_tokens == tokens + 1  # and a new token at the end
    assert loop.step() == {"newer": 1}  # then it decodes again
    loop.run_to_end()
    assert len(newer.output_ids) == 20


def test_every_block_comes_back_once_every_request_has_ended(scheduler_cls):
    ctx = context(num_blocks=8, max_num_seqs=2)
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("older", 5, max_tokens=20)
    newer = loop.add("newer", 5, max_tokens=20)
    loop.add("last", 3, max_tokens=4)  # waits: two sequences at most
    loop.run_until(lambda plan: bool(loop.preempted))
    loop.end(newer, "abort")  # its client went away while it waited to be recomputed
    loop.run_to_end()
    assert [len(seq.output_ids) for seq in loop.seqs.values()] == [20, 12, 4]
    assert loop.scheduler.schedule() == []
    assert ctx.allocator.num_free == ctx.allocator.num_blocks and ctx.allocator.total_refs == 0
