"""Hidden tests for a4 (prefix caching): the handout's rules where the public tests only teach.

Not published (a ``test_*hidden*.py`` file): the grader runs them beside the public tests and
shows them to students once grades are published. Each one catches a mistake that passes every
public test. They drive the hooks with the public tests' ``FakeLoop``, which checks every plan
as the loop does (a write into a block that another sequence or the cache holds fails it) and
counts each request's cache hits.
"""

from __future__ import annotations

import random

import pytest

from engine_core.scheduler import Scheduler

from .test_a4_public import FakeLoop, blocks, context, tail


def run_alone(loop: FakeLoop, name: str, prompt: list[int], max_tokens: int = 2) -> dict[str, int]:
    """Add a request, run everything to the end; returns the plan of its first step."""
    loop.add(name, prompt, max_tokens)
    first = loop.run_until(lambda plan: name in plan)
    loop.run_to_end()
    return first


def test_the_same_tokens_after_another_prefix_are_not_a_hit(scheduler_cls: type[Scheduler], ctx):
    """A block's KV depends on every token before it: its key must too (chained keys)."""
    loop = FakeLoop(scheduler_cls(ctx))
    run_alone(loop, "first", blocks(1, 2) + tail(1))
    # Block 2 here starts the prompt; in "first" it followed block 1. Block 1 here follows block 2.
    assert run_alone(loop, "moved", blocks(2, 1) + tail(1)) == {"moved": 9}
    assert loop.cached["moved"] == 0
    assert run_alone(loop, "again", blocks(1, 2) + tail(2)) == {"again": 2}  # the real prefix still hits


def test_a_request_that_waited_finds_what_was_cached_while_it_waited(scheduler_cls):
    """The prefix is looked up at admission: a request queued behind one with the same prefix shares it."""
    loop = FakeLoop(scheduler_cls(context(num_blocks=16, max_num_seqs=1)))
    loop.add("first", blocks(1, 2) + tail(1))
    loop.add("second", blocks(1, 2) + tail(3))  # arrives at once, runs once "first" has finished
    plan = loop.run_until(lambda plan: "second" in plan)
    assert plan == {"second": 3}
    assert loop.cached["second"] == 8


def test_a_request_admitted_in_the_step_after_its_prefix_was_computed_shares_it(scheduler_cls, ctx):
    """The prompt is cached once its step is done, before later requests are admitted."""
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("first", blocks(1, 2, 3) + tail(1), max_tokens=6)
    loop.add("second", blocks(1, 2, 3) + tail(2))
    loop.add("third", blocks(4) + tail(1))
    assert loop.step() == {"first": 13, "second": 14, "third": 5}  # nothing cached yet: all compute theirs
    loop.add("fourth", blocks(1, 2, 3, 5))
    assert loop.step() == {"first": 1, "second": 1, "third": 1, "fourth": 4}
    assert loop.cached["fourth"] == 12


def test_a_waiting_request_holds_no_blocks(scheduler_cls):
    """A request that cannot start yet must not hold its cached prefix: the cache must stay free to evict it."""
    ctx = context(num_blocks=8)
    loop = FakeLoop(scheduler_cls(ctx))
    running = loop.add("running", blocks(1, 2) + tail(1), max_tokens=12)
    loop.step()  # 3 blocks; its first 2 are cached now
    waiting = loop.add("waiting", blocks(1, 2, 3, 4, 5, 6) + tail(1))  # 2 cached, 5 more blocks: too many now
    assert loop.step() == {"running": 1}
    assert waiting.block_table == [] and waiting.num_computed_tokens == 0
    assert [ctx.allocator.ref_count(block) for block in running.block_table[:2]] == [2, 2]  # "running", the cache
    loop.run_to_end()
    assert loop.cached["waiting"] == 8


@pytest.mark.parametrize("first_done", [True, False], ids=["first-finished", "first-decoding"])
def test_an_identical_block_aligned_prompt_recomputes_its_last_block(scheduler_cls, ctx, first_done):
    """Every block of the prompt is cached, but the last token writes into the last one: that block is its own."""
    loop = FakeLoop(scheduler_cls(ctx))
    first = loop.add("first", blocks(1, 2, 3), max_tokens=6)
    loop.run_until(lambda plan: first.is_finished if first_done else bool(plan))
    again = loop.add("again", blocks(1, 2, 3))
    plan = loop.run_until(lambda plan: "again" in plan)
    assert plan["again"] == 4 and loop.cached["again"] == 8
    assert ctx.allocator.ref_count(again.block_table[2]) == 1
    loop.run_to_end()


def test_cached_blocks_that_a_running_sequence_holds_are_never_evicted(scheduler_cls):
    """Short of blocks, a request waits: the cached blocks in use are not room, and they stay cached."""
    ctx = context(num_blocks=8)
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("long", blocks(1, 2, 3) + tail(1), max_tokens=6)
    loop.step()  # 4 blocks, 3 of them cached and in use
    other = loop.add("other", blocks(4, 5, 6) + tail(1), max_tokens=2)  # 4 blocks: only the watermark would be left
    plan = loop.run_until(lambda plan: "other" in plan)
    assert loop.seqs["long"].is_finished and plan == {"other": 13}
    loop.run_to_end()
    assert run_alone(loop, "again", blocks(1, 2, 3) + tail(2)) == {"again": 2}
    assert len(other.output_ids) == 2


def test_the_least_recently_used_prefix_is_evicted_first(scheduler_cls):
    """A hit makes a prefix recent: the one not used since it was cached goes first."""
    ctx = context(num_blocks=10)
    loop = FakeLoop(scheduler_cls(ctx))
    run_alone(loop, "a", blocks(1, 2) + tail(1))
    run_alone(loop, "b", blocks(3, 4) + tail(1))
    assert run_alone(loop, "a-again", blocks(1, 2) + tail(2)) == {"a-again": 2}  # a is now more recent than b
    run_alone(loop, "big", blocks(5, 6, 7, 8, 9, 10, 11) + tail(1))  # 8 blocks: 2 cached ones must go
    assert run_alone(loop, "a-third", blocks(1, 2) + tail(3)) == {"a-third": 3}
    assert run_alone(loop, "b-again", blocks(3, 4) + tail(2)) == {"b-again": 10}


def test_a_request_shares_its_longest_cached_prefix_at_any_depth(scheduler_cls):
    """Prefixes branch: each request shares as many leading blocks as any cached prompt has in common with it."""
    loop = FakeLoop(scheduler_cls(context(num_blocks=32)))
    run_alone(loop, "r1", blocks(1, 2, 3) + tail(1))
    assert run_alone(loop, "r2", blocks(1, 2, 4) + tail(1)) == {"r2": 5}  # blocks 1, 2
    assert run_alone(loop, "r3", blocks(1, 5) + tail(1)) == {"r3": 5}  # block 1
    assert run_alone(loop, "r4", blocks(1, 2, 4, 6) + tail(2)) == {"r4": 6}  # blocks 1, 2, 4 (r2's)
    assert run_alone(loop, "r5", blocks(1, 2, 3) + tail(2)) == {"r5": 2}  # blocks 1, 2, 3 (r1's)
    assert [loop.cached[name] for name in ("r1", "r2", "r3", "r4", "r5")] == [0, 8, 4, 12, 12]


def test_a_preempted_sequence_comes_back_from_its_cached_prompt(scheduler_cls):
    """Preemption frees the sequence's references; its prompt blocks stay cached, and it shares them again."""
    ctx = context(num_blocks=8)
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("older", blocks(1) + tail(1), max_tokens=20)
    newer = loop.add("newer", blocks(2) + tail(1), max_tokens=20)
    loop.run_until(lambda plan: bool(loop.preempted))
    assert loop.preempted == ["newer"]
    tokens = newer.num_tokens
    plan = loop.run_until(lambda plan: "newer" in plan)
    assert plan["newer"] == tokens - 4 and loop.cached["newer"] == 4  # its prompt's full block was still cached
    loop.run_to_end()
    assert len(newer.output_ids) == 20


def test_twin_prompts_computed_in_one_step_leave_one_copy_in_the_cache(scheduler_cls, ctx):
    """Two requests with the same prompt, admitted together, compute the same blocks: the cache keeps one of each."""
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("x", blocks(1, 2) + tail(1))
    loop.add("y", blocks(1, 2) + tail(1))
    loop.run_to_end()  # FakeLoop's leak check fails a reference that is lost on the way
    held = loop.scheduler.held_blocks()
    assert len(held) == 2 and ctx.allocator.num_used == 2 and ctx.allocator.total_refs == 2
    assert run_alone(loop, "z", blocks(1, 2) + tail(2)) == {"z": 2}


def test_a_prompt_stopped_part_way_caches_only_the_blocks_it_computed(scheduler_cls):
    """An abort in the middle of a long prompt: blocks whose KV was never written are not cached."""
    ctx = context(num_blocks=16, max_num_batched_tokens=6)
    loop = FakeLoop(scheduler_cls(ctx))
    long = loop.add("long", blocks(1, 2, 3, 4) + tail(1))  # 17 tokens: 6 per step
    assert loop.step() == {"long": 6}  # block 1 full, block 2 half written
    loop.end(long, "abort")
    assert len(loop.scheduler.held_blocks()) == 1
    assert run_alone(loop, "again", blocks(1, 2, 3, 4) + tail(1)) == {"again": 6}
    assert loop.cached["again"] == 4


def test_a_cached_prefix_costs_no_token_budget(scheduler_cls):
    """Only the tokens that run count against the step's budget, so a request with a long cached prefix fits."""
    ctx = context(num_blocks=32, max_num_batched_tokens=8)
    loop = FakeLoop(scheduler_cls(ctx))
    run_alone(loop, "warm", blocks(1, 2) + tail(1))
    loop.add("decoding", blocks(5) + tail(1), max_tokens=8)
    loop.step()
    loop.add("cached", blocks(1, 2) + tail(3))  # 11 tokens, 8 cached: 3 run, within the 7 the decode leaves
    assert loop.step() == {"decoding": 1, "cached": 3}


@pytest.mark.parametrize("seed", range(3))
def test_under_load_with_shared_prefixes_every_request_finishes_and_every_block_is_accounted_for(scheduler_cls, seed):
    """Requests sharing prefixes at several depths arrive while others run, in a pool that must evict and preempt."""
    rng = random.Random(seed)
    ctx = context(num_blocks=14)
    loop = FakeLoop(scheduler_cls(ctx))
    prefixes = [blocks(1), blocks(1, 2), blocks(1, 2, 3), blocks(1, 4), blocks(5, 6), []]
    wanted = {}
    for t in range(400):
        if t < 60 and t % 3 == 0:
            prompt = rng.choice(prefixes) + blocks(*rng.sample(range(7, 12), rng.randint(0, 1))) + tail(rng.randint(1, 3))
            wanted[f"r{t}"] = rng.randint(2, 16)
            loop.add(f"r{t}", prompt, max_tokens=wanted[f"r{t}"])
        loop.step()
        if t >= 60 and not loop.live():
            break
    assert {name: len(seq.output_ids) for name, seq in loop.seqs.items()} == wanted
    assert sum(loop.cached.values()) > 0
    held = loop.scheduler.held_blocks()
    assert ctx.allocator.total_refs == len(held) == len(set(held))
