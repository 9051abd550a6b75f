"""Public tests for a4 (prefix caching). Run: ``pytest assignments/a4/tests``.

They call your scheduler's hooks directly, with no model. ``FakeLoop`` below plays the frozen
loop's part: it checks every plan as the loop does (block tables cover what runs, no step writes
into a block that another sequence or your cache holds, no block leaked: every reference is in a
live block table or in ``held_blocks()``), advances what was computed, appends a token when a
sequence reaches its end, calls ``finish`` when a sequence has its ``max_tokens``, then
``on_step_done``. It counts each request's cache hits as the loop does: the computed tokens a
sequence has when it is scheduled beyond those its last step left it.

Prompts are built from whole blocks of 4 tokens, each named by a number (``blocks(1, 2)`` is
``[10, 11, 12, 13, 20, 21, 22, 23]``), and a ``tail`` that ends them inside a block.
"""

from __future__ import annotations

from collections.abc import Callable

from engine_core.block_allocator import BlockAllocator
from engine_core.invariants import check_no_leaks, check_plan, check_released
from engine_core.sampling_params import SamplingParams
from engine_core.scheduler import Scheduler, SchedulerContext, Sequence, SequenceStatus, StepResult


def blocks(*names: int) -> list[int]:
    """Whole blocks of 4 prompt tokens, one per name: block ``n`` holds tokens 10n .. 10n + 3."""
    return [10 * name + i for name in names for i in range(4)]


def tail(n: int) -> list[int]:
    """``n`` tokens (1 to 3) that end a prompt inside a block."""
    return [900 + i for i in range(n)]


def context(num_blocks: int, max_num_seqs: int = 4, max_num_batched_tokens: int = 64) -> SchedulerContext:
    """Blocks of 4 tokens, like the ``ctx`` fixture, with another pool or budget."""
    return SchedulerContext(BlockAllocator(num_blocks), block_size=4, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max_num_batched_tokens, max_model_len=64)


class FakeLoop:
    """The loop's part around a scheduler, without a model."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.ctx = scheduler.ctx
        self.seqs: dict[str, Sequence] = {}
        self.preempted: list[str] = []  # every preemption, in order
        self.cached: dict[str, int] = {}  # prompt tokens each request skipped thanks to the cache
        self._computed_left: dict[str, int] = {}

    def add(self, name: str, prompt: list[int], max_tokens: int = 4) -> Sequence:
        seq = Sequence(name, list(prompt), SamplingParams(max_tokens=max_tokens), seed=0)
        self.scheduler.add(seq)
        self.seqs[name] = seq
        self.cached[name] = 0
        self._computed_left[name] = 0
        return seq

    def live(self) -> list[Sequence]:
        return [seq for seq in self.seqs.values() if not seq.is_finished]

    def step(self) -> dict[str, int]:
        """One step; returns the plan as {request id: tokens scheduled}."""
        computed = {seq.request_id: seq.num_computed_tokens for seq in self.live()}
        plan = self.scheduler.schedule()
        # A victim may come back in the same step, from its cached prompt (check_plan checks its blocks).
        self.preempted += [s.request_id for s in self.live() if s.num_computed_tokens < computed[s.request_id]]
        self._check()
        check_plan(plan, self.ctx, live=self.live(), held=self.scheduler.held_blocks())
        results = [self._run(entry.seq, entry.num_tokens) for entry in plan]
        for result in results:
            if result.finished:
                self.end(result.seq)
        self.scheduler.on_step_done(results)
        self._check()
        return {entry.seq.request_id: entry.num_tokens for entry in plan}

    def _run(self, seq: Sequence, num_tokens: int) -> StepResult:
        """Count a cache hit as the loop does, then what a forward does: compute, and sample at the end."""
        name = seq.request_id
        left = self._computed_left[name]
        self.cached[name] += seq.num_computed_tokens - left if seq.num_computed_tokens > left else 0
        if seq.num_computed_tokens < left:  # recomputed after a preemption, from a cached prefix if any
            self.cached[name] += seq.num_computed_tokens
        seq.status = SequenceStatus.RUNNING
        seq.num_computed_tokens += num_tokens
        self._computed_left[name] = seq.num_computed_tokens
        new = []
        if seq.num_computed_tokens == seq.num_tokens:
            seq.output_ids.append(7)
            new = [7]
        return StepResult(seq, new, 0, len(seq.output_ids) == seq.params.max_tokens)

    def end(self, seq: Sequence, reason: str = "length") -> None:
        """A sequence ended, or its client went away: mark it and call finish."""
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.scheduler.finish(seq)
        check_released(seq)
        self._check()

    def _check(self) -> None:
        check_no_leaks(self.ctx.allocator, self.live(), self.scheduler.held_blocks())

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


def test_a_request_shares_the_cached_blocks_of_its_prompt_prefix(scheduler_cls: type[Scheduler], ctx: SchedulerContext):
    loop = FakeLoop(scheduler_cls(ctx))
    first = loop.add("first", blocks(1, 2) + tail(2))
    loop.step()
    prefix = first.block_table[:2]
    loop.run_to_end()
    second = loop.add("second", blocks(1, 2, 3) + tail(1))
    assert loop.step() == {"second": 5}  # blocks 1 and 2 come from the cache: 8 of its 13 tokens
    assert loop.cached["second"] == 8
    assert second.block_table[:2] == prefix


def test_a_prompt_is_cached_as_soon_as_it_is_computed(scheduler_cls, ctx):
    """A request that arrives while another with the same prefix decodes shares its prompt blocks."""
    loop = FakeLoop(scheduler_cls(ctx))
    first = loop.add("first", blocks(1, 2) + tail(3), max_tokens=8)
    loop.step()
    second = loop.add("second", blocks(1, 2) + tail(1))
    assert loop.step() == {"first": 1, "second": 1}
    assert second.block_table[:2] == first.block_table[:2]
    assert all(ctx.allocator.ref_count(block) == 3 for block in first.block_table[:2])  # first, second, the cache
    loop.run_to_end()


def test_at_least_one_prompt_token_runs_when_the_whole_prompt_is_cached(scheduler_cls, ctx):
    """The step samples the first output token at the prompt's last position, so that token must run."""
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("first", blocks(1, 2) + tail(1))
    loop.run_to_end()
    loop.add("again", blocks(1, 2) + tail(1))  # the same prompt: its 2 full blocks are cached
    assert loop.step() == {"again": 1}
    assert loop.cached["again"] == 8
    loop.run_to_end()


def test_finish_keeps_the_full_prompt_blocks_in_the_cache_and_frees_the_rest(scheduler_cls, ctx):
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", blocks(1, 2) + tail(2), max_tokens=4)  # 10 + 3 computed tokens: 4 blocks at the end
    loop.step()
    prompt_blocks = seq.block_table[:2]
    loop.run_to_end()
    # The partial prompt block and the output's blocks are freed; the 2 full prompt blocks stay cached.
    assert sorted(loop.scheduler.held_blocks()) == sorted(prompt_blocks)
    assert ctx.allocator.num_used == 2 and ctx.allocator.total_refs == 2


def test_cached_blocks_nobody_holds_are_evicted_when_the_pool_runs_short(scheduler_cls):
    ctx = context(num_blocks=8)
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("a", blocks(1, 2, 3) + tail(1), max_tokens=2)
    loop.run_to_end()  # a's 3 full prompt blocks stay cached: 5 of the 8 blocks are free
    b = loop.add("b", blocks(4, 5, 6, 7) + tail(2), max_tokens=4)  # 5 blocks now, a 6th for its last tokens
    loop.run_to_end()
    assert len(b.output_ids) == 4  # it ran, and grew, by evicting a's least recently used block
    assert len(loop.scheduler.held_blocks()) == 6  # a's first 2 blocks and b's 4
    loop.add("c", blocks(1, 2) + tail(1))
    assert loop.step() == {"c": 1}  # a's first two blocks were still cached
    loop.run_to_end()


def test_every_block_is_freed_or_held_by_the_cache_once_every_request_has_ended(scheduler_cls):
    ctx = context(num_blocks=24)
    loop = FakeLoop(scheduler_cls(ctx))
    for i, prompt in enumerate([blocks(1, 2) + tail(1), blocks(1, 3) + tail(2), blocks(5) + tail(3)]):
        loop.add(f"r{i}", prompt, max_tokens=6)
    loop.step()
    for i, prompt in enumerate([blocks(1, 2, 4), blocks(1, 2) + tail(3), blocks(6, 7, 8) + tail(1)], start=3):
        loop.add(f"r{i}", prompt, max_tokens=6)  # they arrive while the first ones decode
    loop.run_to_end()
    assert [len(seq.output_ids) for seq in loop.seqs.values()] == [6] * 6
    assert sum(loop.cached.values()) > 0
    held = loop.scheduler.held_blocks()
    assert ctx.allocator.total_refs == len(held) == len(set(held)) == ctx.allocator.num_used
    assert loop.scheduler.schedule() == []
