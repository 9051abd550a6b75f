"""The ``slo`` part: extra credit, graded only for a scheduler that opts in (a5's SLO-aware policy).

A scheduler opts in with the class attribute ``slo_aware = True``. Without it the part measures
nothing and reports one entry worth 0 of 0 points, "not attempted": the grade's total is what
it would be without the part (its points come on top of the total, see
``autograder.spec.EXTRA_CREDIT_PARTS``). With it, the part is the performance part
(:mod:`.performance`) under this name: the engine hands the spec's SLO targets to the
scheduler (``ctx.ttft_slo_ms``, ``ctx.tpot_slo_ms``), the benchmark scores every request
against them (``slo_attainment``: the share of requests within both), and the gates compare
the graded scheduler's attainment with the baseline's, measured in the same run.
"""

from __future__ import annotations

from ..results import PartResult, make_entry
from . import performance
from .common import PartContext, SchedulerUnavailable, graded_scheduler

OPT_IN = "slo_aware"


def run(ctx: PartContext) -> PartResult:
    try:
        graded = graded_scheduler(ctx)
    except SchedulerUnavailable as err:
        return not_attempted(ctx, f"the scheduler does not load ({err})")
    if getattr(graded, OPT_IN, False) is not True:
        return not_attempted(ctx, f"{graded.__name__} does not set {OPT_IN} = True")
    return performance.run(ctx)


def not_attempted(ctx: PartContext, why: str) -> PartResult:
    """One entry worth 0 of 0 points that says why the part did not run and how to opt in."""
    text = (f"not attempted: {why}. This part is extra credit (up to {ctx.part_spec.points:g} points on top of "
            f"the total) for an SLO-aware scheduler; to have it graded, write the policy and set the class "
            f"attribute `{OPT_IN} = True` (see the {ctx.spec.assignment} handout).")
    entry = make_entry(f"{ctx.part}: not attempted (extra credit)", 0.0, 0.0, text, part=ctx.part)
    return PartResult(ctx.part, [entry], f"not attempted (extra credit): {why}", {"attempted": False})
