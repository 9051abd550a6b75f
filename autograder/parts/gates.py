"""Scoring the performance part's gates: pure functions of bench_serving's level figures.

A gate (:class:`~autograder.spec.GateSpec`) scores one figure of the graded scheduler's run:

* ``compare = "ratio"``: against the baseline's figure in the same run, oriented so that above
  1 always means the graded scheduler is better: ``graded / baseline`` for a figure where
  higher is better (throughput), ``baseline / graded`` for one where lower is (latencies);
* ``compare = "difference"``: the graded scheduler's figure minus the baseline's, oriented the
  same way (above 0 when the graded scheduler is better): for a fraction such as the SLO
  attainment, where the baseline's may be 0 and a ratio would not exist;
* ``compare = "absolute"``: the graded scheduler's own figure (accept length, preemptions...).

The score is linear from ``zero`` (no points) to ``full`` (all the gate's points), clamped,
which works in both directions: for an absolute latency, ``full`` is below ``zero``. A figure
that was not measured (no drafts, so no accept length; a server without the counter) scores 0
and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..spec import GateSpec

# Each metric's key in a bench_serving level, its name for people, and its unit (every name in
# autograder.spec.METRICS has one: the tests check it).
FIGURES: dict[str, tuple[str, str, str]] = {
    "output_throughput": ("output_throughput_tok_s", "output throughput", "tok/s"),
    "request_throughput": ("request_throughput_req_s", "request throughput", "req/s"),
    **{f"{name}_p{q}": (f"{name}_p{q}_ms", f"{label} p{q}", "ms")
       for name, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("latency", "latency"))
       for q in (50, 99)},
    "accept_length": ("spec_accept_length", "accept length", "tokens per verify step"),
    "preemptions": ("num_preemptions", "preemptions", ""),
    "prefix_cache_hit_rate": ("prefix_cache_hit_rate", "prefix-cache hit rate", ""),
    "slo_attainment": ("slo_attainment", "SLO attainment", "of the requests"),
}
UNMEASURED = {
    "accept_length": "no draft was proposed, so there is no accept length",
    "preemptions": "the server reports no preemption counter",
    "prefix_cache_hit_rate": "no prompt token was looked up in a prefix cache",
    "slo_attainment": "no SLO target was set",
}


@dataclass(frozen=True)
class GateOutcome:
    """A gate's result: the scored value (ratio or figure; None if not measured) and its fraction of the points."""

    gate: GateSpec
    graded: float | None
    baseline: float | None
    value: float | None
    fraction: float


def score_fraction(value: float, zero: float, full: float) -> float:
    """Linear from ``zero`` (0) to ``full`` (1), clamped; ``full`` may be below ``zero``."""
    return min(max((value - zero) / (full - zero), 0.0), 1.0)


def figure(level: dict[str, Any] | None, gate: GateSpec) -> float | None:
    """The gate's figure in one benchmark level (of its kind of request, when the gate names one)."""
    if not level:
        return None
    source = level if gate.requests == "all" else (level.get("by_kind") or {}).get(gate.requests) or {}
    value = source.get(FIGURES[gate.metric][0])
    return None if value is None else float(value)


def evaluate(gate: GateSpec, graded: dict[str, Any], baseline: dict[str, Any] | None) -> GateOutcome:
    """Score ``gate`` on the graded scheduler's level (and the baseline's, for a ratio)."""
    mine, theirs = figure(graded, gate), figure(baseline, gate)
    value: float | None = mine
    if gate.compare == "ratio":
        if mine is None or theirs is None or mine <= 0 or theirs <= 0:
            value = None
        else:
            value = theirs / mine if gate.lower_is_better else mine / theirs
    elif gate.compare == "difference":
        value = None if mine is None or theirs is None else (theirs - mine if gate.lower_is_better else mine - theirs)
    fraction = 0.0 if value is None else score_fraction(value, gate.zero, gate.full)
    return GateOutcome(gate, mine, theirs, value, fraction)


def title(gate: GateSpec, baseline_label: str) -> str:
    """What a gate scores, for an entry's name: ``output throughput against the a0 baseline's``."""
    label = FIGURES[gate.metric][1]
    if gate.requests != "all":
        label += f" of the {gate.requests} requests"
    return f"{label} against the {baseline_label}'s" if gate.compare != "absolute" else label


def describe(outcome: GateOutcome, baseline_label: str) -> str:
    """One line: the figures, the scored value, the thresholds and the share of the points earned."""
    gate = outcome.gate
    _, label, unit = FIGURES[gate.metric]
    share = f"{100 * outcome.fraction:.0f}% of its {gate.points:g} points"
    if gate.compare != "absolute":
        better = "lower" if gate.lower_is_better else "higher"
        if outcome.value is None:
            return (f"{title(gate, baseline_label)}: not measured (yours {_number(outcome.graded, unit)}, "
                    f"baseline {_number(outcome.baseline, unit)}) -> {share}")
        if gate.compare == "ratio":
            how, x = ("baseline / yours" if gate.lower_is_better else "yours / baseline"), "x"
            scored = f"{outcome.value:.2f}x"
        else:
            how, x = ("baseline - yours" if gate.lower_is_better else "yours - baseline"), ""
            scored = f"{outcome.value:+.4g}"
        return (f"{title(gate, baseline_label)}: yours {_number(outcome.graded, unit)}, the {baseline_label}'s "
                f"{_number(outcome.baseline, unit)} ({better} is better): {how} = {scored} "
                f"(0 points at {gate.zero:g}{x}, full marks at {gate.full:g}{x}, linear between) -> {share}")
    if outcome.value is None:
        reason = UNMEASURED.get(gate.metric, "it was not measured")
        return f"{title(gate, baseline_label)}: {reason} -> {share}"
    return (f"{title(gate, baseline_label)}: {_number(outcome.value, unit)} (0 points at {gate.zero:g}, full marks at "
            f"{gate.full:g}, linear between) -> {share}")


def short_summary(outcome: GateOutcome, baseline_label: str) -> str:
    """A few words for the part's one-line summary."""
    gate, value = outcome.gate, outcome.value
    label = FIGURES[gate.metric][1]
    if value is None:
        return f"{label} not measured"
    if gate.compare == "ratio":
        return f"{label} {value:.2f}x the {baseline_label}'s (full marks at {gate.full:g}x)"
    if gate.compare == "difference":
        return f"{label} {value:+.3g} over the {baseline_label}'s (full marks at {gate.full:+g})"
    return f"{label} {value:.3g} (full marks at {gate.full:g})"


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.4g} {unit}".rstrip()
