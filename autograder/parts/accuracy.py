"""The ``accuracy`` part: MMLU / GSM8K through the HTTP server, against the reference scheduler.

Why: a scheduler can pass the token-level gate on a handful of short requests and still go
wrong under a real load (longer prompts, more of them, requests finishing at different
times); the accuracy benchmark drives the full server stack with realistic requests. The
yardstick is the reference scheduler measured in the same process on the same engine and the
same seeded items, so the bar is exactly what a correct scheduler scores on this machine
(with greedy, batch-invariant decoding a correct scheduler scores *the same*); ``tolerance``
(absolute accuracy points) only absorbs numerical noise on other hardware.

How: one engine; the reference scheduler is served first (so that whatever the graded one
does cannot disturb it), then the graded one, each on a :func:`~.common.serving` server that
is stopped, with its KV pool checked empty, before the next starts (an engine can be driven by
only one loop at a time). Each enabled dataset (a sample count above 0) is run with
``benchmark.bench_accuracy``'s programmatic API (``run_benchmark``), fixed seed, pinned local
data by default. One entry per dataset, the part's points split between them: full marks when
``student >= reference - tolerance`` and no request failed (a failed request is scored wrong,
but on a dataset the reference scores ~0 on, as the bundled 135M model does on GSM8K, that
alone would let a scheduler that fails every request pass). Both accuracies come with their
95% Wilson intervals.

Each entry also counts the replies that are identical to the reference's, item by item. The
bundled model is near chance on MMLU and near 0 on GSM8K, so a scheduler that corrupts its
outputs can match the reference's *accuracy* by luck; it cannot match its *replies*, since
greedy decoding on CPU float32 is batch-invariant and a correct scheduler reproduces them all.
The count is reported, and scored only when the spec sets ``min_agreement`` above 0.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..results import Entry, PartResult, make_entry, split_points
from ..spec import AccuracySpec
from .common import PartContext, SchedulerUnavailable, graded_scheduler, make_engine, reference_scheduler, serving

if TYPE_CHECKING:
    from engine_core import Engine
    from engine_core.scheduler import Scheduler

AGREEMENT_NOTE = ("greedy decoding on CPU float32 is batch-invariant, so a correct scheduler reproduces the "
                  "reference's replies exactly: differing replies mean outputs are corrupted under load")
HINT = ("a lower accuracy than the reference's means outputs are corrupted under load (see the correctness part: "
        "each sequence must only read and write its own blocks); request failures mean your scheduler raised or "
        "broke an invariant (the errors are listed above)")


def datasets(spec: AccuracySpec) -> list[tuple[str, int, int]]:
    """(dataset, samples, max_tokens) for each enabled dataset."""
    all_sets = [("mmlu", spec.mmlu_samples, spec.mmlu_max_tokens), ("gsm8k", spec.gsm8k_samples, spec.gsm8k_max_tokens)]
    return [d for d in all_sets if d[1] > 0]


def run(ctx: PartContext) -> PartResult:
    spec = ctx.part_spec
    assert isinstance(spec, AccuracySpec)
    enabled = datasets(spec)
    try:
        graded = graded_scheduler(ctx)
    except SchedulerUnavailable as err:
        return _all_zero(spec, enabled, f"cannot load the scheduler: {err}")
    reference, reference_label = reference_scheduler(ctx.spec)
    engine = make_engine(ctx.spec.engine)
    ref_runs, ref_notes = _measure(engine, reference, ctx, spec, enabled, "reference")
    if any(s is None or s["request_failures"] for s in ref_runs.values()):
        # Not the student's doing: do not grade against a broken yardstick.
        raise RuntimeError(f"the {reference_label} failed on the accuracy benchmark, so there is nothing to compare "
                           f"with (not your scheduler's fault: tell the course staff): "
                           f"{ref_notes or [s['request_errors'][:3] for s in ref_runs.values() if s]}")
    student_runs, notes = _measure(engine, graded, ctx, spec, enabled, "graded")

    entries: list[Entry] = []
    metrics: dict[str, Any] = {"reference_label": reference_label, "tolerance": spec.tolerance, "datasets": {}}
    summaries = []
    for (name, samples, _), share in zip(enabled, split_points(spec.points, len(enabled))):
        ref, got = ref_runs[name], student_runs.get(name)
        assert ref is not None
        label = name.upper()
        title = f"accuracy: {label} ({samples} items) within {100 * spec.tolerance:.0f} points of the reference"
        if got is None:
            output = "\n".join(notes) or f"the {label} run did not complete"
            entries.append(make_entry(title, 0.0, share, output, part="accuracy"))
            summaries.append(f"{label} not measured")
            continue
        # A failed request is scored wrong, which alone would not fail a dataset the reference
        # scores ~0 on (the bundled model on GSM8K): failures fail the entry outright.
        same, differing = agreement(got, ref)
        agreed = same / max(len(got["items"]), 1)
        passed = (got["accuracy"] >= ref["accuracy"] - spec.tolerance - 1e-9 and not got["request_failures"]
                  and agreed >= spec.min_agreement - 1e-9)
        width = max(len(ctx.graded_label), len(reference_label))
        lines = [
            f"{label}, {samples} items (seed {spec.seed}), greedy, max_tokens {got['config']['max_tokens']}:",
            f"  {ctx.graded_label:<{width}} {_figure(got)}",
            f"  {reference_label:<{width}} {_figure(ref)}",
            (f"  pass mark: reference - {100 * spec.tolerance:.0f} points = "
             f"{100 * max(ref['accuracy'] - spec.tolerance, 0):.1f}%  ->  {'passed' if passed else 'FAILED'}"),
        ]
        lines.append(f"  replies identical to the reference's: {same}/{len(got['items'])}"
                     + (f" (at least {100 * spec.min_agreement:.0f}% needed)" if spec.min_agreement else
                        " (reported, not scored)"))
        if differing:
            lines.append(f"    differing: {', '.join(differing[:5])}{' ...' if len(differing) > 5 else ''}; "
                         f"{AGREEMENT_NOTE}")
        if got["request_failures"]:
            lines.append(f"  {got['request_failures']} requests failed, which fails this entry whatever the accuracy:")
            lines += [f"    - {e}" for e in got["request_errors"][:5]]
        lines += [f"  note: {n}" for n in notes]
        if not passed:
            lines += ["", HINT]
        entries.append(make_entry(title, 1.0 if passed else 0.0, share, "\n".join(lines), part="accuracy"))
        summaries.append(f"{label} {100 * got['accuracy']:.1f}% vs reference {100 * ref['accuracy']:.1f}%")
        metrics["datasets"][name] = {
            "student": _numbers(got), "reference": _numbers(ref), "passed": passed, "samples": samples,
            "agreement": agreed,
        }
    return PartResult("accuracy", entries, "; ".join(summaries), metrics)


def agreement(got: dict[str, Any], ref: dict[str, Any]) -> tuple[int, list[str]]:
    """How many replies equal the reference's (same items, same order), and the ids of those that do not.

    Replies are compared as bench_accuracy records them (long ones keep their two ends); a
    failed request has no reply and never agrees.
    """
    same, differing = 0, []
    for mine, theirs in zip(got["items"], ref["items"]):
        if mine["reply"] is not None and mine["reply"] == theirs["reply"]:
            same += 1
        else:
            differing.append(str(mine["id"]))
    return same, differing


def _measure(engine: Engine, scheduler_cls: type[Scheduler], ctx: PartContext, spec: AccuracySpec,
             enabled: list[tuple[str, int, int]], who: str) -> tuple[dict[str, dict[str, Any] | None], list[str]]:
    """Serve ``scheduler_cls`` and run every enabled dataset; (summaries by dataset, notes on what went wrong)."""
    from benchmark import bench_accuracy
    from engine_core.invariants import describe_error

    runs: dict[str, dict[str, Any] | None] = {name: None for name, _, _ in enabled}
    notes: list[str] = []
    leaked = 0
    try:
        with serving(engine, scheduler_cls, ctx.spec.engine) as served:
            for name, samples, max_tokens in enabled:
                config = bench_accuracy.BenchConfig(
                    dataset=name, num_samples=samples, concurrency=spec.concurrency, seed=spec.seed,
                    base_url=served.base_url, max_tokens=max_tokens, source=spec.data_source,
                    timeout_s=spec.request_timeout_s, progress=False,
                )
                got = runs[name] = asyncio.run(bench_accuracy.run_benchmark(config))
                print(f"accuracy ({who}): {name} {100 * got['accuracy']:.1f}% "
                      f"({got['num_correct']}/{got['num_items']}) in {got['wall_time_s']:.1f} s", flush=True)
        leaked = served.leaked_blocks
    except Exception as exc:  # the scheduler's __init__ raised, or the server did not start
        notes.append(f"the {who} scheduler could not be served: {describe_error(exc)}")
    if leaked:
        notes.append(f"{leaked} KV block references were still held once every request had finished, beyond what "
                     "held_blocks() reports (a leak in finish()?)")
    return runs, notes


def _figure(summary: dict[str, Any]) -> str:
    return (f"{100 * summary['accuracy']:5.1f}%  ({summary['num_correct']}/{summary['num_items']}, "
            f"95% CI {100 * summary['ci95_low']:.1f}-{100 * summary['ci95_high']:.1f}%)")


def _numbers(summary: dict[str, Any]) -> dict[str, float]:
    return {key: summary[key] for key in ("accuracy", "ci95_low", "ci95_high", "num_correct", "num_items",
                                          "request_failures", "wall_time_s")}


def _all_zero(spec: AccuracySpec, enabled: list[tuple[str, int, int]], message: str) -> PartResult:
    entries = [
        make_entry(f"accuracy: {name.upper()} ({samples} items)", 0.0, share, message, part="accuracy")
        for (name, samples, _), share in zip(enabled, split_points(spec.points, len(enabled)))
    ]
    return PartResult("accuracy", entries, message.splitlines()[0])
