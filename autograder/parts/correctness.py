"""The ``correctness`` part: concurrent requests through the loop must equal each one run alone.

Why this is the gate: greedy decoding on this engine is batch-invariant (``tests/test_batch_
invariance.py``), so a request's tokens must not depend on what else ran in its steps. A
scheduler that lets two sequences read or write each other's KV blocks, schedules the wrong
number of tokens, or re-runs positions produces fluent text that is simply different: only a
token-by-token comparison shows it.

How: one engine (the spec's, float32 on CPU by default) computes each prompt's expected
tokens alone with ``Engine.generate`` (static batching of one request: no scheduler involved),
then an :class:`EngineLoop` with the graded scheduler and invariant checks on gets the same
prompts, at most ``concurrency`` in flight (all at once when ``concurrency >= num_prompts``).
Prompts are chat prompts of quite different lengths, greedy, ``ignore_eos`` so that every
request runs its full ``max_tokens``.

A request fails if it errors (its ``RequestOutput.error`` is shown), if its tokens differ (the
first differing index is shown), or if it does not finish before the part's deadline. The
part also fails if the loop logged a scheduler failure (an invariant, a raising hook) or if
KV blocks are still allocated when everything has finished. Scoring (``scoring`` in the spec):
``all_or_nothing`` (the default: outputs are right or they are not) or ``proportional`` (the
share of requests that match, and nothing if the loop logged a failure or leaked blocks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..results import PartResult, make_entry
from ..spec import CorrectnessSpec
from .common import LoopErrors, PartContext, SchedulerUnavailable, graded_scheduler, make_engine, make_loop, wait_idle

if TYPE_CHECKING:
    from engine_core import Engine, SamplingParams
    from engine_core.loop import EngineLoop, OutputCallback, RequestOutput
    from engine_core.tokenizer import ChatTokenizer

HINT = ("outputs differ from the same request run alone: check that each sequence only reads and writes its own "
        "blocks (block_table), and that num_tokens/drafts are right")
QUESTIONS = (
    "Hi",
    "Write a short poem about the sea.",
    "Tell me a story about a dragon who learns to bake bread.",
    "What is the capital of France, and why is it famous?",
    "List three fruits that are red.",
    ("Explain, step by step and in plain words, how a bicycle stays upright while moving, what role the rider "
     "plays, why it is harder to balance when going slowly, and what the trail of the front fork has to do with "
     "it. Then give three tips for beginners."),
    "How do I boil an egg?",
    "Describe the water cycle to a ten-year-old, mentioning evaporation, condensation and precipitation.",
    "Why is the sky blue?",
    ("You are planning a weekend trip to the mountains with two friends who have never hiked before. Suggest a "
     "packing list, a simple two-day route with rest stops, and a few safety rules everyone should follow, "
     "including what to do if the weather turns bad."),
    "Translate 'good morning' into Spanish.",
    "Give me one tip to sleep better.",
)
DEADLINE_MARGIN_S = 20.0


@dataclass
class Collected:
    """One request's output as it streams in (the loop thread appends, the main thread reads at the end)."""

    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    error: str | None = None
    finish_reason: str | None = None


def chat_prompts(tokenizer: ChatTokenizer, count: int) -> list[list[int]]:
    """``count`` chat prompts of different lengths (token ids); questions repeat with a variant number."""
    prompts = []
    for i in range(count):
        question = QUESTIONS[i % len(QUESTIONS)]
        if i >= len(QUESTIONS):
            question += f" (variant {i // len(QUESTIONS)})"
        prompts.append(tokenizer.apply_chat_template([{"role": "user", "content": question}]))
    return prompts


def run(ctx: PartContext) -> PartResult:
    spec = ctx.part_spec
    assert isinstance(spec, CorrectnessSpec)
    from engine_core import SamplingParams

    try:
        scheduler_cls = graded_scheduler(ctx)
    except SchedulerUnavailable as err:
        return _result(spec, [f"cannot load the scheduler: {err}"], {}, "the scheduler does not load")
    engine = make_engine(ctx.spec.engine)
    prompts = chat_prompts(engine.tokenizer, spec.num_prompts)
    params = SamplingParams(temperature=0, max_tokens=spec.max_tokens, ignore_eos=True)
    expected = [engine.generate([prompt], params)[0] for prompt in prompts]
    print(f"correctness: expected outputs of {len(prompts)} prompts computed alone", flush=True)

    errors = LoopErrors()
    collected = [Collected() for _ in prompts]
    with errors.attached():
        try:
            loop = make_loop(engine, scheduler_cls, ctx.spec.engine)
        except Exception as exc:
            from engine_core.invariants import describe_error

            message = f"creating the scheduler failed: {describe_error(exc)}"
            return _result(spec, [message], {}, message)
        loop.start()
        finished_all = _submit_and_wait(loop, prompts, params, collected, spec.concurrency,
                                        ctx.seconds_left(DEADLINE_MARGIN_S))
        if not finished_all:
            # A loop thread stuck in schedule() would never stop: do not wait for it, report.
            return _report(spec, prompts, expected, collected, errors.messages, None, True, _decoder(engine))
        wait_idle(loop)
        loop.stop()
    leaked = engine.allocator.num_used
    return _report(spec, prompts, expected, collected, errors.messages, leaked, False, _decoder(engine))


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


def _report(spec: CorrectnessSpec, prompts: list[list[int]], expected: list[list[int]], collected: list[Collected],
            loop_errors: list[str], leaked: int | None, stuck: bool, decode: Callable[[list[int]], str]) -> PartResult:
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
            index = next((j for j, (a, b) in enumerate(zip(got.tokens, want)) if a != b), min(len(got.tokens), len(want)))
            diverged.append(f"req-{i}")
            problems.append(f"{name}: differs from the same request run alone from token {index} on: "
                            f"got {got.tokens[index:index + 4]}... = {decode(got.tokens[index:index + 8])}, "
                            f"alone {want[index:index + 4]}... = {decode(want[index:index + 8])} "
                            f"({len(got.tokens)} vs {len(want)} tokens)")
        else:
            ok += 1
    header: list[str] = []
    if stuck:
        header.append(f"timed out: not every request finished in time ({ok} matched so far); your scheduler may "
                      "be stuck in a loop in schedule(), or never schedule some requests")
    if diverged:
        header.append(f"{len(diverged)} of {len(prompts)} requests differ from running alone "
                      f"({', '.join(diverged)}): {HINT}")
    if loop_errors:
        header.append("the loop reported scheduler failures (invariants or raising hooks):\n"
                      + "\n".join(f"  - {m}" for m in dict.fromkeys(loop_errors)))
    if leaked:
        header.append(f"{leaked} KV blocks were still allocated after every request had finished: finish() must "
                      "free each sequence's blocks")
    fraction = ok / len(prompts)
    clean = not (stuck or loop_errors or leaked)
    if spec.scoring == "all_or_nothing":
        fraction = 1.0 if ok == len(prompts) and clean else 0.0
    elif not clean:
        fraction = 0.0
    lines = header + ([""] if header and problems else []) + problems
    errored = [c.error for c in collected if c.finished and c.error is not None]
    if fraction >= 1.0:
        summary = f"all {len(prompts)} concurrent requests match their outputs run alone"
    elif stuck or diverged:
        summary = header[0]
    elif errored:
        summary = f"{len(errored)} of {len(prompts)} requests failed with an error: {errored[0]}"
    elif loop_errors:
        summary = f"the loop reported a scheduler failure: {loop_errors[0]}"
    elif leaked:
        summary = header[-1]
    else:
        summary = f"{len(prompts) - ok} of {len(prompts)} requests did not match"
    metrics = {"matched": ok, "total": len(prompts), "diverged": diverged, "leaked_blocks": leaked or 0}
    return _result(spec, lines, metrics, summary, fraction)


def _result(spec: CorrectnessSpec, lines: list[str], metrics: dict[str, object], summary: str,
            fraction: float = 0.0) -> PartResult:
    name = (f"correctness: {spec.num_prompts} greedy requests ({spec.max_tokens} tokens, concurrency "
            f"{spec.concurrency}) match each request run alone")
    output = "\n".join(lines) if lines else "every request matched its output run alone"
    return PartResult("correctness", [make_entry(name, fraction, spec.points, output, part="correctness")],
                      summary[:300], metrics)
