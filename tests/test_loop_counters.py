"""What the loop counts (preemptions, prefix-cache hits, drafts), through the test schedulers of
``tests/schedulers`` on the bundled model: each one's greedy outputs equal each request run
alone, the counter it exercises moves, and no KV block is left behind."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine_core import Engine, EngineConfig, SamplingParams
from engine_core.loop import EngineLoop, LoopStats
from engine_core.scheduler import Scheduler

from .loop_driver import Collected, run_requests
from .schedulers.preempt_on_demand import PreemptOnDemandScheduler
from .schedulers.prefix_cache import PrefixCacheScheduler
from .schedulers.prompt_lookup import PromptLookupScheduler

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
SMALL_POOL = 6  # blocks of 16 tokens: two or three chat requests at a time, then preemption


@pytest.fixture(scope="module")
def small_engine() -> Engine:
    # A budget of one byte would hold no block: num_kv_blocks decides alone.
    return Engine(EngineConfig(device="cpu", dtype="float32", kv_cache_bytes=1, num_kv_blocks=SMALL_POOL))


def run_loop(
    engine: Engine, scheduler_cls: type[Scheduler], waves: list[list[list[int]]]
) -> tuple[list[Collected], LoopStats, list[int]]:
    """Run each wave of prompts to the end, one wave after the other, through a fresh loop.

    Returns the outputs, the loop's stats and the blocks its scheduler still holds; the pool is
    reset afterwards, so that a cache left behind does not reach the next test.
    """
    loop = EngineLoop(engine, scheduler_cls)
    loop.start()
    try:
        results = [r for wave in waves for r in run_requests(loop, wave, GREEDY)]
    finally:
        loop.stop()
    held = loop.scheduler.held_blocks()
    leaked = engine.allocator.total_refs - len(held)
    engine.allocator.reset()
    assert leaked == 0, f"{leaked} KV block references neither in a live sequence nor in the cache"
    return results, loop.stats(), held


@pytest.fixture(scope="module")
def alone(engine: Engine) -> Callable[[list[list[int]]], list[list[int]]]:
    """Each prompt's greedy output, run alone (remembered: several tests run the same prompts)."""
    outputs: dict[tuple[int, ...], list[int]] = {}

    def run(prompts: list[list[int]]) -> list[list[int]]:
        for prompt in prompts:
            if tuple(prompt) not in outputs:
                outputs[tuple(prompt)] = engine.generate([prompt], GREEDY)[0]
        return [outputs[tuple(p)] for p in prompts]

    return run


def test_num_kv_blocks_sizes_the_pool_whatever_the_budget(small_engine: Engine):
    assert small_engine.kv.num_blocks == small_engine.allocator.num_blocks == SMALL_POOL
    assert small_engine.max_model_len == SMALL_POOL * small_engine.block_size
    with pytest.raises(ValueError, match="^num_kv_blocks must be at least 1, not 0$"):
        EngineConfig(num_kv_blocks=0)


@pytest.mark.slow
def test_preemption_recomputes_and_is_counted(small_engine: Engine, chat_prompts, alone):
    # Two prompts fill the pool; the first one's decode soon needs a block the second holds.
    prompts = [chat_prompts[1], chat_prompts[3], chat_prompts[0]]
    results, stats, _ = run_loop(small_engine, PreemptOnDemandScheduler, [prompts])
    assert [r.token_ids for r in results] == alone(prompts)
    assert stats.num_preemptions > 0
    assert stats.num_cached_tokens == 0  # recomputing from scratch is no cache hit
    assert stats.num_prompt_tokens == sum(len(p) for p in prompts)


@pytest.mark.slow
def test_prefix_cache_hits_are_counted_in_tokens(engine: Engine, alone):
    document = "Notes on bread. " + " ".join(f"In {1000 + 37 * i} bakers used recipe {i}." for i in range(12))
    prompts = [engine.tokenizer.apply_chat_template([{"role": "user", "content": f"{document} {question}"}])
               for question in ("When?", "Who?", "Why?")]
    # The first request fills the cache; the next two find its blocks there.
    results, stats, held = run_loop(engine, PrefixCacheScheduler, [prompts[:1], prompts[1:]])
    assert [r.token_ids for r in results] == alone(prompts)
    block = engine.block_size
    expected = sum(min(_common_prefix(p, prompts[0]), len(p) - 1) // block * block for p in prompts[1:])
    assert stats.num_cached_tokens == expected > 0
    assert stats.num_prompt_tokens == sum(len(p) for p in prompts)
    assert held and stats.num_preemptions == 0


@pytest.mark.slow
def test_prefix_cache_evicts_when_the_pool_runs_short(small_engine: Engine, chat_prompts, alone):
    # One request at a time, each leaving its full prompt blocks cached; the last needs the whole pool.
    prompts = [chat_prompts[1], chat_prompts[3], chat_prompts[2]]
    block = small_engine.block_size
    assert small_engine.blocks_for(len(prompts[2]) + GREEDY.max_tokens) == SMALL_POOL
    results, stats, held = run_loop(small_engine, PrefixCacheScheduler, [[p] for p in prompts])
    assert [r.token_ids for r in results] == alone(prompts)
    # Every chat prompt starts with the chat template's system prompt: the later two find it cached.
    assert stats.num_cached_tokens == 2 * (_common_prefix(prompts[0], prompts[1]) // block * block) > 0
    # What the first two left cached, beyond the shared block, was evicted to make room for the last.
    assert len(held) == len(prompts[2]) // block


@pytest.mark.slow
def test_prompt_lookup_drafts_are_counted_and_accepted(engine: Engine, chat_prompts, alone):
    repetitive = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Repeat exactly: one two three four, one two three four, one two three four"}])
    prompts = [repetitive, chat_prompts[1]]
    results, stats, _ = run_loop(engine, PromptLookupScheduler, [prompts])
    assert [r.token_ids for r in results] == alone(prompts)
    assert 0 < stats.num_accepted_tokens <= stats.num_draft_tokens <= 4 * stats.num_drafts
    # Accepted drafts make a step yield several tokens: the stream has fewer chunks than tokens.
    assert results[0].num_outputs < len(results[0].token_ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
