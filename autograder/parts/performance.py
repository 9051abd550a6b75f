"""The ``performance`` part: serving throughput of the graded scheduler over the baseline's.

How: one engine; the graded scheduler is served first, then the baseline (``a0`` for a1), each
on a :func:`~.common.serving` server, and each measured with ``benchmark.bench_serving``'s
programmatic entry (``parse_args`` then ``run_benchmark``: the same code as the command line,
including its warm-up request) with the spec's workload: fixed input and output lengths
(``ignore_eos``), ``concurrency`` closed-loop clients, ``num_requests`` requests, seeded
prompts. Both runs happen in the same process on the same machine, so the *ratio* of output
throughputs is what is scored; absolute numbers vary too much between machines to grade.

Score: 0 at or below ``zero_ratio``, full marks at or above ``full_ratio``, linear in between.
A run with any failed request scores 0 and says so (a scheduler that drops requests is not
fast); the baseline is then not measured at all, which saves its minutes. TTFT and TPOT p50
of both runs are reported but not scored.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..results import PartResult, make_entry
from ..spec import PerformanceSpec
from .common import PartContext, SchedulerUnavailable, baseline_scheduler, graded_scheduler, make_engine, serving

if TYPE_CHECKING:
    from engine_core import Engine
    from engine_core.scheduler import Scheduler

HINT = ("to go faster, schedule() must batch every running sequence's decode in one step and admit waiting requests "
        "while there is room (max_num_seqs, the token budget, free KV blocks), and finish() must free blocks at once "
        "so the next request can start")


def score_fraction(ratio: float, zero_ratio: float, full_ratio: float) -> float:
    """Linear between ``zero_ratio`` (0) and ``full_ratio`` (1), clamped."""
    return min(max((ratio - zero_ratio) / (full_ratio - zero_ratio), 0.0), 1.0)


def run(ctx: PartContext) -> PartResult:
    spec = ctx.part_spec
    assert isinstance(spec, PerformanceSpec)
    try:
        graded = graded_scheduler(ctx)
    except SchedulerUnavailable as err:
        return _result(spec, 0.0, f"cannot load the scheduler: {err}", "the scheduler does not load", {})
    baseline, baseline_label = baseline_scheduler(ctx.spec)
    engine = make_engine(ctx.spec.engine)
    student, error = _measure(engine, graded, ctx, spec)
    if student is None or student["failures"]:
        reason = error or _failures(student)
        text = f"{ctx.graded_label} failed requests in the serving benchmark, so it earns no performance points:\n{reason}"
        return _result(spec, 0.0, text, "requests failed: " + reason.splitlines()[0], {"student": _numbers(student)})
    base, base_error = _measure(engine, baseline, ctx, spec)
    if base is None or base["failures"]:
        raise RuntimeError(f"the {baseline_label} failed the serving benchmark (not your scheduler's fault: tell the "
                           f"course staff): {base_error or _failures(base)}")
    ratio = student["output_throughput_tok_s"] / base["output_throughput_tok_s"]
    fraction = score_fraction(ratio, spec.zero_ratio, spec.full_ratio)
    rows = [("", "out tok/s", "TTFT p50 ms", "TPOT p50 ms", "wall s"),
            (ctx.graded_label, *_cells(student)), (baseline_label, *_cells(base))]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    table = "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                      for r in rows)
    lines = [
        (f"workload: {spec.num_requests} requests, input {spec.input_len} / output {spec.output_len} tokens, "
         f"{spec.concurrency} concurrent clients"),
        table,
        (f"throughput ratio: {ratio:.2f}x the {baseline_label}  (0 points at <= {spec.zero_ratio:g}x, full marks "
         f"at >= {spec.full_ratio:g}x, linear in between)  ->  {100 * fraction:.0f}% of the points"),
    ]
    if fraction < 1.0:
        lines += ["", HINT]
    metrics = {"ratio": ratio, "full_ratio": spec.full_ratio, "zero_ratio": spec.zero_ratio,
               "baseline_label": baseline_label, "student": _numbers(student), "baseline": _numbers(base)}
    summary = f"{ratio:.2f}x the {baseline_label}'s throughput (full marks at {spec.full_ratio:g}x)"
    return _result(spec, fraction, "\n".join(lines), summary, metrics)


def _measure(engine: Engine, scheduler_cls: type[Scheduler], ctx: PartContext,
             spec: PerformanceSpec) -> tuple[dict[str, Any] | None, str | None]:
    """The benchmark level's figures for one scheduler, or (None, why it could not run)."""
    from benchmark import bench_serving
    from engine_core.invariants import describe_error

    argv = [
        "--tokenizer", ctx.spec.engine.model, "--dataset", spec.dataset, "--input-len", str(spec.input_len),
        "--output-len", str(spec.output_len), "--concurrencies", str(spec.concurrency),
        "--num-requests", str(spec.num_requests), "--seed", str(spec.seed), "--timeout", str(spec.request_timeout_s),
    ]
    try:
        with serving(engine, scheduler_cls, ctx.spec.engine) as served:
            args = bench_serving.parse_args([*argv, "--base-url", served.base_url])
            report = asyncio.run(bench_serving.run_benchmark(args))
    except Exception as exc:  # RuntimeError: the warm-up request failed; or the scheduler's __init__ raised
        return None, describe_error(exc)
    level: dict[str, Any] = report["levels"][0]
    print(f"performance: {scheduler_cls.__name__}: {level['output_throughput_tok_s']:.1f} output tok/s, "
          f"{level['failures']} failures", flush=True)
    return level, None


def _failures(level: dict[str, Any] | None) -> str:
    if not level:
        return "the benchmark did not run"
    reasons = "; ".join(f"{count} x {reason}" for reason, count in level.get("failure_reasons", {}).items())
    return f"{level['failures']} of {level['num_requests']} requests failed: {reasons}"


def _cells(level: dict[str, Any]) -> tuple[str, str, str, str]:
    def fmt(key: str, pattern: str) -> str:
        return "-" if level.get(key) is None else pattern.format(level[key])

    return (fmt("output_throughput_tok_s", "{:.1f}"), fmt("ttft_p50_ms", "{:.0f}"), fmt("tpot_p50_ms", "{:.1f}"),
            fmt("wall_time_s", "{:.1f}"))


def _numbers(level: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("output_throughput_tok_s", "ttft_p50_ms", "tpot_p50_ms", "wall_time_s", "failures", "successes")
    return {key: level.get(key) for key in keys} if level else {}


def _result(spec: PerformanceSpec, fraction: float, output: str, summary: str, metrics: dict[str, Any]) -> PartResult:
    name = (f"performance: output throughput over the baseline ({spec.concurrency} clients, "
            f"{spec.input_len}/{spec.output_len} tokens)")
    return PartResult("performance", [make_entry(name, fraction, spec.points, output, part="performance")],
                      summary[:300], metrics)
