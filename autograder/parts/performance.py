"""The ``performance`` part: the serving benchmark on the graded scheduler, scored by the spec's gates.

The ``slo`` part (:mod:`.slo`) is this part under another name, with SLO targets that the
engine hands to the scheduler and the benchmark scores (``slo_attainment``).

How: one engine; the graded scheduler is served first, then (when a gate compares with it) the
baseline (``a0`` for a1), each on a :func:`~.common.serving` server, and each measured with
``benchmark.bench_serving``'s programmatic entry (``parse_args`` then ``run_benchmark``: the
same code as the command line, including its warm-up request and its scrape of the server's
counters) with the spec's workload: its kind (``default``, ``shared-prefix``,
``long-prompt-mix``, ``repetitive``), input and output lengths with their randomness, the
output slack (above 1, requests may stop at EOS), ``concurrency`` closed-loop clients and
``num_requests`` seeded requests. Both runs happen in the same process on the same machine,
so a *ratio* (or a *difference*) holds on any hardware; absolute gates suit counts (accept
length, preemptions).

Score: one entry per gate (:mod:`.gates`), each linear between its ``zero`` and ``full``
thresholds. A run with any failed request scores 0 on every gate and says so (a scheduler that
drops requests is not fast); the baseline is then not measured at all, which saves its
minutes. The figures of both runs (and the server's counters, when it has them) are shown in
a table in every entry's output.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..results import PartResult, make_entry
from ..spec import PerformanceSpec
from .common import PartContext, SchedulerUnavailable, baseline_scheduler, graded_scheduler, make_engine, serving
from .gates import GateOutcome, describe, evaluate, short_summary, title

if TYPE_CHECKING:
    from engine_core import Engine
    from engine_core.scheduler import Scheduler

GENERIC_HINT = ("compare your figures with the baseline's in the table: the gate's figure is the one to move; the "
                "assignment's handout says what the scheduler should do for it")
# (header, key, format) of the figures table; the counter columns only when the server has them.
COLUMNS = (("out tok/s", "output_throughput_tok_s", "{:.1f}"), ("TTFT p50 ms", "ttft_p50_ms", "{:.0f}"),
           ("TPOT p50 ms", "tpot_p50_ms", "{:.1f}"), ("ITL p99 ms", "itl_p99_ms", "{:.1f}"),
           ("wall s", "wall_time_s", "{:.1f}"))
SLO_COLUMNS = (("SLO met", "slo_attainment", "{:.1%}"),)
COUNTER_COLUMNS = (("preempt", "num_preemptions", "{:.0f}"), ("cache hit", "prefix_cache_hit_rate", "{:.1%}"),
                   ("accept len", "spec_accept_length", "{:.2f}"))
NUMBERS = ("output_throughput_tok_s", "ttft_p50_ms", "tpot_p50_ms", "itl_p99_ms", "wall_time_s", "failures",
           "successes", "num_preemptions", "prefix_cache_hit_tokens", "prefix_cache_hit_rate", "spec_num_drafts",
           "spec_num_accepted_tokens", "spec_accept_length", "slo_attainment")


def run(ctx: PartContext) -> PartResult:
    spec = ctx.part_spec
    assert isinstance(spec, PerformanceSpec)
    try:
        graded = graded_scheduler(ctx)
    except SchedulerUnavailable as err:
        return _all_zero(ctx, spec, f"cannot load the scheduler: {err}", "the scheduler does not load")
    baseline, baseline_label = baseline_scheduler(ctx.spec)
    engine = make_engine(ctx.spec.engine, spec.ttft_slo_ms, spec.tpot_slo_ms)
    student, error = _measure(engine, graded, ctx, spec)
    if student is None or student["failures"]:
        reason = error or _failures(student)
        text = (f"{ctx.graded_label} failed requests in the serving benchmark, so it earns no {ctx.part} points:"
                f"\n{reason}")
        return _all_zero(ctx, spec, text, "requests failed: " + reason.splitlines()[0], {"student": _numbers(student)})
    base = None
    if any(gate.compare != "absolute" for gate in spec.gates):
        base, base_error = _measure(engine, baseline, ctx, spec)
        if base is None or base["failures"]:
            raise RuntimeError(f"the {baseline_label} failed the serving benchmark (not your scheduler's fault: tell "
                               f"the course staff): {base_error or _failures(base)}")
    outcomes = [evaluate(gate, student, base) for gate in spec.gates]
    return _graded(ctx, spec, outcomes, student, base, baseline_label)


def _graded(ctx: PartContext, spec: PerformanceSpec, outcomes: list[GateOutcome], student: dict[str, Any],
            base: dict[str, Any] | None, baseline_label: str) -> PartResult:
    """One entry per gate: its line, then the workload and the figures table, then the hint if it lost points."""
    rows = [(ctx.graded_label, student)] + ([(baseline_label, base)] if base else [])
    context = [workload_line(spec), figures_table(rows)]
    entries = []
    for outcome in outcomes:
        lines = [describe(outcome, baseline_label), "", *context]
        if outcome.fraction < 1.0:
            lines += ["", hint(ctx)]
        name = f"{ctx.part}: {title(outcome.gate, baseline_label)} ({_workload_brief(spec)})"
        entries.append(make_entry(name, outcome.fraction, outcome.gate.points, "\n".join(lines), part=ctx.part))
    for line in context:
        print(line, flush=True)
    metrics = {
        "baseline_label": baseline_label, "workload": spec.workload, "student": _numbers(student),
        "baseline": _numbers(base) if base else None,
        "gates": [{"metric": o.gate.metric, "compare": o.gate.compare, "requests": o.gate.requests,
                   "value": o.value, "zero": o.gate.zero, "full": o.gate.full, "points": o.gate.points,
                   "fraction": o.fraction} for o in outcomes],
    }
    summary = "; ".join(short_summary(o, baseline_label) for o in outcomes)
    return PartResult(ctx.part, entries, summary[:300], metrics)


def hint(ctx: PartContext) -> str:
    """The spec's advice for this assignment, or a generic one."""
    return (ctx.part_spec.hint or GENERIC_HINT).format(a=ctx.spec.assignment)


def workload_line(spec: PerformanceSpec) -> str:
    lengths = f"input {spec.input_len} / output {spec.output_len} tokens"
    if spec.randomness < 1:
        lengths += f" (lengths from {spec.randomness:g}x the target up)"
    if spec.output_slack > 1:
        lengths += f", max_tokens {spec.output_slack:g}x the output length, stopping at EOS"
    targets = [f"{name} {ms:g} ms" for name, ms in (("TTFT", spec.ttft_slo_ms), ("TPOT", spec.tpot_slo_ms)) if ms]
    return (f"workload {spec.workload}: {spec.num_requests} requests, {lengths}, {spec.concurrency} concurrent "
            "clients" + (f"; SLO targets {' and '.join(targets)} per request" if targets else ""))


def _workload_brief(spec: PerformanceSpec) -> str:
    return f"{spec.workload}, {spec.concurrency} clients, {spec.input_len}/{spec.output_len} tokens"


def visible_columns(levels: list[dict[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    """The figures' columns: the SLO and counter ones only when some run has them (targets; the server's counters)."""
    def shown(columns: tuple[tuple[str, str, str], ...]) -> tuple[tuple[str, str, str], ...]:
        return columns if any(level.get(key) is not None for level in levels for _, key, _ in columns) else ()
    return COLUMNS + shown(SLO_COLUMNS) + shown(COUNTER_COLUMNS)


def figures_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A text table of each run's figures."""
    columns = visible_columns([level for _, level in rows])
    table = [("", *(header for header, _, _ in columns))]
    for label, level in rows:
        table.append((label, *("-" if level.get(key) is None else fmt.format(level[key]) for _, key, fmt in columns)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in table)


def _measure(engine: Engine, scheduler_cls: type[Scheduler], ctx: PartContext,
             spec: PerformanceSpec) -> tuple[dict[str, Any] | None, str | None]:
    """The benchmark level's figures for one scheduler, or (None, why it could not run)."""
    from benchmark import bench_serving
    from engine_core.invariants import describe_error

    argv = [
        "--tokenizer", ctx.spec.engine.model, "--dataset", spec.dataset, "--workload", spec.workload,
        "--input-len", str(spec.input_len), "--output-len", str(spec.output_len),
        "--randomness", str(spec.randomness), "--output-slack", str(spec.output_slack),
        "--concurrencies", str(spec.concurrency), "--num-requests", str(spec.num_requests),
        "--seed", str(spec.seed), "--timeout", str(spec.request_timeout_s),
        "--ttft-slo-ms", str(spec.ttft_slo_ms), "--tpot-slo-ms", str(spec.tpot_slo_ms),
    ]
    try:
        with serving(engine, scheduler_cls, ctx.spec.engine) as served:
            args = bench_serving.parse_args([*argv, "--base-url", served.base_url])
            report = asyncio.run(bench_serving.run_benchmark(args))
    except Exception as exc:  # RuntimeError: the warm-up request failed; or the scheduler's __init__ raised
        return None, describe_error(exc)
    level: dict[str, Any] = report["levels"][0]
    print(f"{ctx.part}: {scheduler_cls.__name__}: {level['output_throughput_tok_s']:.1f} output tok/s, "
          f"{level['failures']} failures", flush=True)
    return level, None


def _failures(level: dict[str, Any] | None) -> str:
    if not level:
        return "the benchmark did not run"
    reasons = "; ".join(f"{count} x {reason}" for reason, count in level.get("failure_reasons", {}).items())
    return f"{level['failures']} of {level['num_requests']} requests failed: {reasons}"


def _numbers(level: dict[str, Any] | None) -> dict[str, Any]:
    numbers = {key: level.get(key) for key in NUMBERS} if level else {}
    if level and level.get("by_kind"):
        numbers["by_kind"] = {kind: {key: figures.get(key) for key in NUMBERS}
                              for kind, figures in level["by_kind"].items()}
    return numbers


def _all_zero(ctx: PartContext, spec: PerformanceSpec, output: str, summary: str,
              metrics: dict[str, Any] | None = None) -> PartResult:
    baseline_label = f"{ctx.spec.baseline} baseline"  # as baseline_scheduler names it, without loading it
    entries = [make_entry(f"{ctx.part}: {title(gate, baseline_label)} ({_workload_brief(spec)})", 0.0, gate.points,
                          output, part=ctx.part) for gate in spec.gates]
    return PartResult(ctx.part, entries, summary[:300], metrics or {})
