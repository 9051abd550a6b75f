"""The ``correctness`` part: concurrent requests through the loop must equal each one run alone.

Why this is the gate: greedy decoding on this engine is batch-invariant (``tests/test_batch_
invariance.py``), so a request's tokens must not depend on what else ran in its steps. A
scheduler that lets two sequences read or write each other's KV blocks, schedules the wrong
number of tokens, re-runs positions, reuses a cached block wrongly or accepts a wrong draft
produces fluent text that is simply different: only a token-by-token comparison shows it.

How: one engine (the spec's, float32 on CPU by default, with the part's own smaller KV pool
when ``num_kv_blocks`` is set) computes each prompt's expected tokens alone with
``Engine.generate`` (static batching of one request: no scheduler involved), then an
:class:`EngineLoop` with the graded scheduler and invariant checks on gets the same prompts, at
most ``concurrency`` in flight (all at once when ``concurrency >= num_prompts``). The prompts
are the spec's ``workload`` (:mod:`.prompts`): chat prompts, prompts sharing block-aligned
prefixes, repetitive ones, or a few long prompts among short ones; greedy, ``ignore_eos`` by
default so that every request runs its full ``max_tokens``.

A request fails if it errors (its ``RequestOutput.error`` is shown), if its tokens differ (the
first differing index is shown), or if it does not finish before the part's deadline. The
part also fails if the loop logged a scheduler failure (an invariant, a raising hook), if KV
block references remain once everything has finished beyond those ``held_blocks()`` reports
(a prefix cache's), or if one of the loop's counters stayed below the spec's ``min_*`` count
(preemptions, prefix-cache hits, accepted drafts: what the workload should have caused).
Scoring (``scoring`` in the spec): ``all_or_nothing`` (the default: outputs are right or they
are not) or ``proportional`` (the share of requests that match, and nothing if any of the
rest failed).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine_core.block_allocator import blocks_for

from ..results import PartResult, make_entry
from ..spec import CorrectnessSpec
from .common import (
    LoopErrors,
    PartContext,
    SchedulerUnavailable,
    graded_scheduler,
    leaked_references,
    make_engine,
    make_loop,
    wait_idle,
)
from .prompts import PromptSet, build_prompts

if TYPE_CHECKING:
    from engine_core import Engine, SamplingParams
    from engine_core.loop import EngineLoop, OutputCallback, RequestOutput

HINT = ("outputs differ from the same request run alone: check that each sequence only reads and writes its own "
        "blocks (block_table), and that num_tokens/drafts are right")
DEADLINE_MARGIN_S = 20.0
COUNTERS = ("num_preemptions", "num_cached_tokens", "num_prompt_tokens", "num_drafts", "num_draft_tokens",
            "num_accepted_tokens")


@dataclass
class Collected:
    """One request's output as it streams in (the loop thread appends, the main thread reads at the end)."""

    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    error: str | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Workload:
    """What the loop was given: the prompts, their sampling, and the pool they had to share."""

    prompts: PromptSet
    params: SamplingParams
    num_kv_blocks: int
    block_size: int


@dataclass(frozen=True)
class LoopOutcome:
    """What the loop did: outputs, logged failures, leaked references (None if stuck) and its counters."""

    collected: list[Collected]
    loop_errors: list[str]
    leaked: int | None
    counters: dict[str, int]

    @property
    def stuck(self) -> bool:
        return self.leaked is None


def run(ctx: PartContext) -> PartResult:
    spec = ctx.part_spec
    assert isinstance(spec, CorrectnessSpec)
    try:
        scheduler_cls = graded_scheduler(ctx)
    except SchedulerUnavailable as err:
        return _result(spec, [f"cannot load the scheduler: {err}"], {}, "the scheduler does not load")
    engine_spec = ctx.spec.engine
    if spec.num_kv_blocks:
        engine_spec = dataclasses.replace(engine_spec, num_kv_blocks=spec.num_kv_blocks)
    engine = make_engine(engine_spec)
    workload = _workload(engine, spec, engine_spec.max_num_batched_tokens)
    expected = [engine.generate([prompt], workload.params)[0] for prompt in workload.prompts.prompts]
    print(f"correctness: expected outputs of {len(expected)} {spec.workload} prompts computed alone", flush=True)
    errors = LoopErrors()
    with errors.attached():
        try:
            loop = make_loop(engine, scheduler_cls, engine_spec)
        except Exception as exc:
            from engine_core.invariants import describe_error

            message = f"creating the scheduler failed: {describe_error(exc)}"
            return _result(spec, [message], {}, message)
        outcome = _drive(loop, workload, spec.concurrency, ctx.seconds_left(DEADLINE_MARGIN_S), errors)
    return _report(spec, workload, expected, outcome, _decoder(engine))


def _workload(engine: Engine, spec: CorrectnessSpec, token_budget: int) -> Workload:
    """The spec's prompts; a RuntimeError (for the course staff) when one cannot fit the pool alone."""
    from engine_core import SamplingParams

    longest = engine.max_model_len - spec.max_tokens
    long_len = min(token_budget + token_budget // 2, longest)
    prompts = build_prompts(spec.workload, engine.tokenizer, spec.num_prompts, engine.block_size, long_len)
    too_long = max(len(p) for p in prompts.prompts) + spec.max_tokens
    if too_long > engine.max_model_len:
        raise RuntimeError(f"a {spec.workload} request needs {too_long} tokens but the engine takes at most "
                           f"{engine.max_model_len} (its KV pool has {engine.kv.num_blocks} blocks): the spec's "
                           "pool or max_tokens is too small for this workload")
    params = SamplingParams(temperature=0, max_tokens=spec.max_tokens, ignore_eos=spec.ignore_eos)
    return Workload(prompts, params, engine.kv.num_blocks, engine.block_size)


def _drive(loop: EngineLoop, workload: Workload, concurrency: int, timeout: float, errors: LoopErrors) -> LoopOutcome:
    """Run every prompt through the loop; stop it and count what it leaked, unless it got stuck."""
    collected = [Collected() for _ in workload.prompts.prompts]
    loop.start()
    finished_all = _submit_and_wait(loop, workload.prompts.prompts, workload.params, collected, concurrency, timeout)
    if not finished_all:
        # A loop thread stuck in schedule() would never stop: do not wait for it, report.
        return LoopOutcome(collected, errors.messages, None, _counters(loop))
    wait_idle(loop)
    loop.stop()
    return LoopOutcome(collected, errors.messages, leaked_references(loop), _counters(loop))


def _counters(loop: EngineLoop) -> dict[str, int]:
    stats = loop.stats()
    return {name: getattr(stats, name) for name in COUNTERS}


def _decoder(engine: Engine) -> Callable[[list[int]], str]:
    """Token ids to a short quoted text, for showing where outputs part ways."""
    def decode(ids: list[int]) -> str:
        return repr(engine.tokenizer.decode(ids, skip_special_tokens=False)[:60])
    return decode


def _submit_and_wait(loop: EngineLoop, prompts: list[list[int]], params: SamplingParams, collected: list[Collected],
                     concurrency: int, timeout: float) -> bool:
    """Keep ``concurrency`` requests in flight until all have finished; False if the time ran out first."""
    done = threading.Semaphore(0)

    def on_output(result: Collected) -> OutputCallback:
        def callback(out: RequestOutput) -> None:  # on the loop thread: only record and signal
            result.tokens += out.new_token_ids
            if out.finished:
                result.finished, result.error, result.finish_reason = True, out.error, out.finish_reason
                done.release()
        return callback

    deadline = time.monotonic() + max(timeout, 1.0)
    next_index = 0
    for _ in range(min(concurrency, len(prompts))):
        loop.submit(f"req-{next_index}", prompts[next_index], params, on_output(collected[next_index]))
        next_index += 1
    for _ in prompts:
        if not done.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            return False
        if next_index < len(prompts):
            loop.submit(f"req-{next_index}", prompts[next_index], params, on_output(collected[next_index]))
            next_index += 1
    return True


def _compare(prompts: list[list[int]], expected: list[list[int]], collected: list[Collected],
             decode: Callable[[list[int]], str]) -> tuple[int, list[str], list[str]]:
    """(requests that match, ids of those that differ, one line per request that failed)."""
    problems: list[str] = []
    diverged: list[str] = []
    ok = 0
    for i, (want, got) in enumerate(zip(expected, collected)):
        name = f"req-{i} ({len(prompts[i])}-token prompt)"
        if not got.finished:
            problems.append(f"{name}: did not finish ({len(got.tokens)} of {len(want)} tokens so far)")
        elif got.error is not None:
            problems.append(f"{name}: failed with an error: {got.error}")
        elif got.tokens != want:
            index = next((j for j, (a, b) in enumerate(zip(got.tokens, want)) if a != b),
                         min(len(got.tokens), len(want)))
            diverged.append(f"req-{i}")
            problems.append(f"{name}: differs from the same request run alone from token {index} on: "
                            f"got {got.tokens[index:index + 4]}... = {decode(got.tokens[index:index + 8])}, "
                            f"alone {want[index:index + 4]}... = {decode(want[index:index + 8])} "
                            f"({len(got.tokens)} vs {len(want)} tokens)")
        else:
            ok += 1
    return ok, diverged, problems


def counter_shortfalls(spec: CorrectnessSpec, workload: Workload, counters: dict[str, int]) -> list[str]:
    """A line for each ``min_*`` count not reached: what did not happen, and what should have caused it."""
    longest = max(len(p) for p in workload.prompts.prompts) + spec.max_tokens
    blocks = blocks_for(longest, workload.block_size)
    pool = (f"the KV pool has {workload.num_kv_blocks} blocks of {workload.block_size} tokens for {spec.concurrency} "
            f"concurrent requests of up to {longest} tokens ({blocks} blocks each)")
    checks = (
        ("num_preemptions", spec.min_preemptions, "no sequence was preempted", "sequences were preempted",
         f"{pool}, so decodes run out of blocks and a sequence must be preempted (its blocks freed, to be "
         "recomputed later) for the others to go on"),
        ("num_cached_tokens", spec.min_cached_tokens, "no prompt token was served from the prefix cache",
         "prompt tokens were served from the prefix cache",
         f"{workload.prompts.feature}: a prefix cache should find those blocks and share them instead of "
         "computing them again"),
        ("num_accepted_tokens", spec.min_accepted_tokens, "no draft token was accepted", "draft tokens were accepted",
         f"{workload.prompts.feature}: drafts looked up from the prompt's n-grams should match what the model "
         f"generates ({counters['num_drafts']} drafts of {counters['num_draft_tokens']} tokens were proposed)"),
    )
    lines = []
    for name, required, none_happened, some_happened, cause in checks:
        got = counters[name]
        if got < required:
            what = none_happened if got == 0 else f"only {got} {some_happened}"
            lines.append(f"{what} (at least {required} required), although {cause}")
    return lines


def describe_counters(counters: dict[str, int]) -> str:
    """The loop's counters over the run, in one line."""
    prompt = counters["num_prompt_tokens"]
    rate = f" ({100 * counters['num_cached_tokens'] / prompt:.0f}%)" if prompt else ""
    drafts = counters["num_drafts"]
    accept = f", accept length {1 + counters['num_accepted_tokens'] / drafts:.2f}" if drafts else ""
    return (f"engine counters: {counters['num_preemptions']} preemptions; {counters['num_cached_tokens']} of "
            f"{prompt} prompt tokens from the prefix cache{rate}; {drafts} drafts of {counters['num_draft_tokens']} "
            f"tokens, {counters['num_accepted_tokens']} accepted{accept}")


def _report(spec: CorrectnessSpec, workload: Workload, expected: list[list[int]], outcome: LoopOutcome,
            decode: Callable[[list[int]], str]) -> PartResult:
    prompts = workload.prompts.prompts
    ok, diverged, problems = _compare(prompts, expected, outcome.collected, decode)
    shortfalls = [] if outcome.stuck else counter_shortfalls(spec, workload, outcome.counters)
    header: list[str] = []
    if outcome.stuck:
        header.append(f"timed out: not every request finished in time ({ok} matched so far); your scheduler may "
                      "be stuck in a loop in schedule(), or never schedule some requests")
    if diverged:
        header.append(f"{len(diverged)} of {len(prompts)} requests differ from running alone "
                      f"({', '.join(diverged)}): {HINT}")
    if outcome.loop_errors:
        header.append("the loop reported scheduler failures (invariants or raising hooks):\n"
                      + "\n".join(f"  - {m}" for m in dict.fromkeys(outcome.loop_errors)))
    if outcome.leaked:
        header.append(f"{outcome.leaked} KV block references were still held after every request had finished, "
                      "beyond those held_blocks() reports: finish() must free each sequence's blocks (or keep them "
                      "in a cache that held_blocks() reports)")
    header += shortfalls
    clean = not (outcome.stuck or outcome.loop_errors or outcome.leaked or shortfalls)
    fraction = ok / len(prompts) if clean else 0.0
    if spec.scoring == "all_or_nothing":
        fraction = 1.0 if ok == len(prompts) and clean else 0.0
    lines = header + ([""] if header and problems else []) + problems
    if not lines:
        lines = [f"all {len(prompts)} requests matched their outputs run alone"]
    lines += ["", describe_counters(outcome.counters)]
    metrics = {"matched": ok, "total": len(prompts), "diverged": diverged, "leaked_blocks": outcome.leaked or 0,
               "counters": outcome.counters}
    return _result(spec, lines, metrics, _summary(fraction, len(prompts), ok, header, diverged, outcome), fraction)


def _summary(fraction: float, total: int, ok: int, header: list[str], diverged: list[str],
             outcome: LoopOutcome) -> str:
    errored = [c.error for c in outcome.collected if c.finished and c.error is not None]
    if fraction >= 1.0:
        return f"all {total} concurrent requests match their outputs run alone"
    if outcome.stuck or diverged:
        return header[0]
    if errored:
        return f"{len(errored)} of {total} requests failed with an error: {errored[0]}"
    if outcome.loop_errors:
        return f"the loop reported a scheduler failure: {outcome.loop_errors[0]}"
    if header:  # a leak or a count not reached
        return header[-1]
    return f"{total - ok} of {total} requests did not match"


def _result(spec: CorrectnessSpec, lines: list[str], metrics: dict[str, object], summary: str,
            fraction: float = 0.0) -> PartResult:
    name = (f"correctness: {spec.num_prompts} greedy {spec.workload} requests ({spec.max_tokens} tokens, concurrency "
            f"{spec.concurrency}) match each request run alone")
    output = "\n".join(lines).strip()
    return PartResult("correctness", [make_entry(name, fraction, spec.points, output, part="correctness")],
                      summary.splitlines()[0][:300], metrics)
