"""The ``slo`` part (a5's extension, extra credit): graded only for a scheduler that sets ``slo_aware = True``.

End to end on a tiny spec (8 requests of 16/8 tokens against a2, targets nobody misses), then
the pieces: the difference gate, results that an extra-credit part may report worth 0, and a
total that leaves extra credit out of the maximum.
"""

from __future__ import annotations

import pytest

from autograder import report
from autograder.parts.gates import describe, evaluate
from autograder.results import PartResult, ResultError, make_entry, parse_part_result
from autograder.runner import PartOutcome
from autograder.spec import GateSpec, SpecError, load_spec

from .test_grader import ROOT, by_part, grade

SLO_SPEC = """
assignment = "a1"
baseline = "a2"
reference = "a1"

[engine]
max_num_seqs = 16

[parts.slo]
points = 10
time_limit_s = 240
input_len = 16
output_len = 8
concurrency = 4
num_requests = 8
ttft_slo_ms = {ttft}
tpot_slo_ms = 60000

[[parts.slo.gates]]
metric = "slo_attainment"
compare = "difference"
zero = -0.5
full = 0.0
points = 10
"""


def slo_spec(tmp_path, ttft: float = 60000) -> object:
    path = tmp_path / "spec.toml"
    path.write_text(SLO_SPEC.format(ttft=ttft))
    return path


def test_a_scheduler_without_slo_aware_is_not_attempted_and_costs_nothing(tmp_path):
    results, out, stdout = grade(tmp_path, "--scheduler-module", "solutions.a5.scheduler", spec=slo_spec(tmp_path))
    [entry] = by_part(results, "slo:")
    assert (entry["score"], entry["max_score"]) == (0, 0) and results["score"] == 0
    assert "not attempted" in entry["name"] and "SpeculativeScheduler does not set slo_aware = True" in entry["output"]
    assert "slo_aware = True" in entry["output"] and "extra credit" in entry["output"]
    assert "| slo | 0 / 0 | not attempted |" in (out / "report.md").read_text()
    assert "not attempted" in stdout


def test_a_scheduler_with_slo_aware_is_measured_against_the_baseline(tmp_path):
    results, out, _ = grade(tmp_path, "--scheduler-module", "solutions.a5.slo_scheduler", spec=slo_spec(tmp_path))
    [entry] = by_part(results, "slo:")
    assert entry["name"].startswith("slo: SLO attainment against the a2 baseline's")
    assert (entry["score"], entry["max_score"]) == (10, 10), entry["output"]
    # Both schedulers ran in the same process, and the table shows the attainment of each.
    assert "SLO met" in entry["output"] and "a2 baseline" in entry["output"] and "100.0%" in entry["output"]
    assert "SLO targets TTFT 60000 ms and TPOT 60000 ms" in entry["output"]
    markdown = (out / "report.md").read_text()
    assert "## SLO attainment (extra credit)" in markdown and "(10 extra credit)" in markdown


# ---- the pieces --------------------------------------------------------------------------------


def test_a_scheduler_that_does_not_load_is_not_attempted_either(tmp_path):
    from autograder.parts import slo
    from autograder.parts.common import PartContext

    ctx = PartContext(load_spec(slo_spec(tmp_path)), "slo", "student", "tests.schedulers.no_such_module")
    [entry] = slo.run(ctx).entries
    assert (entry.score, entry.max_score) == (0, 0) and "does not load" in entry.output


def test_extra_credit_not_run_for_a_failed_requirement_is_worth_nothing(tmp_path):
    from autograder.grade import grade as run_grade

    path = slo_spec(tmp_path)
    path.write_text(path.read_text().replace("[parts.slo]", "[parts.correctness]\npoints = 20\ntime_limit_s = 60\n\n"
                                             "[parts.slo]\nrequires = [\"correctness\"]"))
    failed = _outcome("correctness", 0, 20)
    outcomes, _ = run_grade(load_spec(path), ["slo"], "student", tmp_path, quiet=True, outcomes=[failed])
    [entry] = outcomes[-1].result.entries
    assert (entry.score, entry.max_score) == (0, 0) and "(extra credit) needs full marks on correctness" in entry.output
    assert report.part_status(outcomes[-1]) == "not graded" and report.total(outcomes) == "0/20"


def test_a_difference_gate_scores_the_graded_figure_minus_the_baselines():
    gate = GateSpec("slo_attainment", "difference", 0.0, 0.4, 10)
    outcome = evaluate(gate, {"slo_attainment": 0.9}, {"slo_attainment": 0.6})
    assert outcome.value == pytest.approx(0.3) and outcome.fraction == pytest.approx(0.75)
    assert "yours - baseline = +0.3" in describe(outcome, "a2 baseline")
    # A baseline that met no target still gives a figure (a ratio would not exist).
    assert evaluate(gate, {"slo_attainment": 0.5}, {"slo_attainment": 0.0}).fraction == 1.0
    assert evaluate(gate, {"slo_attainment": None}, {"slo_attainment": 0.0}).value is None
    # Lower-is-better figures are oriented too: above 0 when the graded scheduler is faster.
    assert evaluate(GateSpec("ttft_p50", "difference", 0, 100, 1), {"ttft_p50_ms": 50.0},
                    {"ttft_p50_ms": 150.0}).value == pytest.approx(100)


def test_only_an_extra_credit_part_may_report_entries_worth_nothing():
    not_attempted = {"part": "slo", "tests": [{"name": "slo: not attempted", "score": 0, "max_score": 0}]}
    assert parse_part_result(not_attempted, "slo", 10, extra_credit=True).entries[0].max_score == 0
    with pytest.raises(ResultError, match="add up to 0"):
        parse_part_result(not_attempted, "slo", 10)
    forged = {**not_attempted, "tests": [{"name": "slo", "score": 50, "max_score": 50}]}
    with pytest.raises(ResultError, match="add up to 50"):
        parse_part_result(forged, "slo", 10, extra_credit=True)


def _outcome(part: str, score: float, maximum: float) -> PartOutcome:
    entry = make_entry(part, score / maximum if maximum else 0.0, maximum, part=part)
    return PartOutcome(part, PartResult(part, [entry]), "ok", 1.0)


def test_the_total_leaves_extra_credit_out_of_the_maximum():
    graded = [_outcome("tests", 40, 40), _outcome("performance", 15, 20)]
    assert report.total(graded) == "55/60"
    assert report.total([*graded, _outcome("slo", 0, 0)]) == "55/60"  # not attempted
    assert report.part_status(_outcome("slo", 0, 0)) == "not attempted"
    assert report.total([*graded, _outcome("slo", 6, 10)], " / ") == "61 / 60 (6 extra credit)"


def test_the_a5_spec_grades_slo_as_extra_credit_on_top_of_100():
    spec = load_spec(ROOT / "solutions" / "a5" / "spec.toml")
    slo = spec.parts["slo"]
    assert spec.total_points == 100 and slo.points > 0 and slo.requires == ("correctness",)
    assert slo.ttft_slo_ms > 0 and [gate.metric for gate in slo.gates] == ["slo_attainment"]


def test_an_attainment_gate_needs_a_target(tmp_path):
    path = slo_spec(tmp_path, ttft=0)
    path.write_text(path.read_text().replace("tpot_slo_ms = 60000", "tpot_slo_ms = 0"))
    with pytest.raises(SpecError, match=r"\[parts.slo\] 'gates' #1: slo_attainment needs ttft_slo_ms or tpot_slo_ms"):
        load_spec(path)
