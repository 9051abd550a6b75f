"""Hidden tests for a2 (paged memory, preemption by recompute): the handout's rules where the
public tests only teach.

Not published (a ``test_*hidden*.py`` file): the grader runs them beside the public tests and
shows them to students once grades are published. Each one catches a mistake that passes every
public test. They drive the hooks with the public tests' ``FakeLoop``, which checks every plan
as the loop does. Pools are sized so that they run out at a known step: with blocks of 4, a
prompt of 8 tokens needs a new block at its first decode, one of 5 at its fourth.
"""

from __future__ import annotations

import random

import pytest

from engine_core.scheduler import RequestRejected, Scheduler, SchedulerContext

from .test_a2_public import FakeLoop, context


def first_preemption(scheduler_cls: type[Scheduler], ctx: SchedulerContext,
                     prompts: list[tuple[str, int]]) -> tuple[FakeLoop, dict[str, int]]:
    """Admit ``prompts`` (name, length; 20 tokens each to generate) and step until one is preempted.

    Until then every sequence runs in every step: one short of a block preempts, it never sits
    out a step holding its blocks. Returns the loop and the plan of the step that preempted.
    """
    loop = FakeLoop(scheduler_cls(ctx))
    for name, prompt_len in prompts:
        loop.add(name, prompt_len, max_tokens=20)
    names = {name for name, _ in prompts}
    for _ in range(20):
        plan = loop.step()
        if loop.preempted:
            return loop, plan
        assert set(plan) == names, f"{sorted(names - set(plan))} sat out a step, neither run nor preempted"
    raise AssertionError("no preemption in 20 steps")


def test_the_victim_is_the_newest_running_sequence(scheduler_cls):
    """The oldest runs out of blocks first; the newest is preempted, the one in between keeps running."""
    # 9 blocks: 2 each at admission; "oldest" grows at 8 and 12, the others at 8 only, so the pool
    # is empty when "oldest" needs its 4th block.
    loop, plan = first_preemption(scheduler_cls, context(num_blocks=9), [("oldest", 8), ("middle", 5), ("newest", 5)])
    assert loop.preempted == ["newest"]
    assert plan == {"oldest": 1, "middle": 1}


def test_a_sequence_short_of_a_block_preempts_a_newer_one_not_one_already_planned(scheduler_cls):
    """The victim is never one already in this step's plan (an older sequence): it would run with no blocks."""
    loop, plan = first_preemption(scheduler_cls, context(num_blocks=9), [("oldest", 5), ("middle", 8), ("newest", 5)])
    assert loop.preempted == ["newest"]
    assert plan == {"oldest": 1, "middle": 1}


def test_the_newest_preempts_itself_when_it_is_the_one_short_of_a_block(scheduler_cls):
    """No newer sequence to take blocks from: the newest gives its own back, and the older ones run."""
    loop, plan = first_preemption(scheduler_cls, context(num_blocks=9), [("oldest", 5), ("middle", 5), ("newest", 8)])
    assert loop.preempted == ["newest"]
    assert plan == {"oldest": 1, "middle": 1}


def test_a_preempted_sequence_is_readmitted_before_requests_that_arrived_after_it(scheduler_cls):
    """A victim goes back to the front of the queue: nothing that arrived after it starts before it is back."""
    loop = FakeLoop(scheduler_cls(context(num_blocks=8, max_num_seqs=2)))
    loop.add("older", 5, max_tokens=20)
    loop.add("victim", 5, max_tokens=20)
    loop.add("later", 2, max_tokens=2)  # waits for a slot; fits in the blocks the victim frees
    plan = loop.run_until(lambda plan: bool(loop.preempted))
    assert loop.preempted == ["victim"]
    if "later" not in plan:  # then "older" runs alone until it ends, and someone takes its blocks
        plan = loop.run_until(lambda plan: "later" in plan or "victim" in plan)
    assert "victim" in plan, "'later' started while the victim, which arrived before it, waited to be recomputed"


def test_a_sequence_preempted_twice_then_aborted_frees_each_block_once(scheduler_cls):
    """Preempted, recomputed, preempted again, then aborted while it waits: every block is freed exactly once."""
    ctx = context(num_blocks=8)
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("old", 5, max_tokens=24)
    loop.add("short", 3, max_tokens=8)  # ends early: its blocks let "victim" back in while "old" still grows
    victim = loop.add("victim", 5, max_tokens=24)
    loop.run_until(lambda plan: loop.preempted.count("victim") == 2)
    loop.end(victim, "abort")  # FakeLoop checks that nothing is freed twice and nothing leaks
    loop.run_to_end()
    assert ctx.allocator.num_free == ctx.allocator.num_blocks and ctx.allocator.total_refs == 0


def test_admission_counts_the_blocks_decodes_took_in_the_same_step(scheduler_cls):
    """The watermark is checked against what is free after this step's decodes grew, request by request."""
    ctx = context(num_blocks=16, max_num_seqs=16)
    scheduler = scheduler_cls(ctx)
    watermark = scheduler.watermark_blocks
    loop = FakeLoop(scheduler)
    loop.add("running", 4, max_tokens=8)
    loop.step()  # 1 block; its next token crosses into a 2nd
    for i in range(15):
        loop.add(f"w{i}", 3)  # 1 block each
    plan = loop.step()
    assert plan["running"] == 1
    assert ctx.allocator.num_free == watermark, f"{len(plan) - 1} admitted, {ctx.allocator.num_free} blocks left free"


def test_a_request_that_can_never_fit_is_rejected_when_it_is_added(scheduler_cls):
    """add() raises RequestRejected for a request whose prompt + max_tokens needs more blocks than the pool has."""
    ctx = context(num_blocks=8, max_model_len=128)  # 32 tokens of KV
    loop = FakeLoop(scheduler_cls(ctx))
    with pytest.raises(RequestRejected):
        loop.add("huge", 10, max_tokens=23)  # 33 tokens: 9 blocks
    exact = loop.add("exact", 10, max_tokens=22)  # 32 tokens: the whole pool, and it runs
    loop.run_to_end()
    assert len(exact.output_ids) == 22


def test_a_request_that_needs_the_whole_pool_runs_once_it_is_alone(scheduler_cls):
    """The watermark keeps room for running decodes: with none running, a request may take every block."""
    ctx = context(num_blocks=8)
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("first", 5, max_tokens=4)
    big = loop.add("big", 30, max_tokens=2)  # its prompt alone takes all 8 blocks
    loop.add("after", 3, max_tokens=2)
    loop.run_to_end(max_steps=50)
    assert len(big.output_ids) == 2


def test_no_deadlock_when_every_running_sequence_needs_a_block_at_once(scheduler_cls):
    """Every step runs someone, even when all the running sequences cross into a new block together."""
    loop = FakeLoop(scheduler_cls(context(num_blocks=6)))
    for i in range(4):
        loop.add(f"s{i}", 4, max_tokens=12)  # 1 block each; all cross into their 2nd, 3rd, 4th together
    for _ in range(100):
        if not loop.live():
            break
        assert loop.step(), f"nothing scheduled while {[seq.request_id for seq in loop.live()]} wait"
    assert [len(seq.output_ids) for seq in loop.seqs.values()] == [12] * 4


@pytest.mark.parametrize("seed", range(3))
def test_under_load_every_victim_is_newer_than_every_sequence_that_runs_in_its_step(scheduler_cls, seed):
    """Requests of many lengths arrive while others run: preemption takes the newest, so the oldest always moves."""
    rng = random.Random(seed)
    loop = FakeLoop(scheduler_cls(context(num_blocks=12)))
    for t in range(300):
        if t < 40 and t % 2 == 0:
            loop.add(f"r{t}", rng.randint(2, 12), max_tokens=rng.randint(4, 30))
        before = len(loop.preempted)
        plan = loop.step()
        arrival = list(loop.seqs)
        for victim in loop.preempted[before:]:
            newer = [name for name in plan if arrival.index(name) > arrival.index(victim)]
            assert not newer, f"step {t}: {victim} was preempted while the newer {newer} ran"
        if t >= 40 and not loop.live():
            break
    assert not loop.live() and loop.preempted  # all done, and the load did preempt
