"""The autograder, end to end: real grading runs on small specs, plus its pure pieces.

Each end-to-end test runs ``python -m autograder.grade`` as a student or Gradescope would, with
a spec written to ``tmp_path`` that keeps every part tiny (3 prompts x 6 tokens, 4 MMLU items,
8 requests of 16/8 tokens), then reads back what the grader wrote: results.json (which must
validate as Gradescope's format, with the score equal to the sum of the tests' scores),
junit.xml and report.md. The misbehaving schedulers live in ``tests/schedulers/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from autograder import report
from autograder.parts.accuracy import agreement
from autograder.parts.correctness import Workload, counter_shortfalls
from autograder.parts.gates import FIGURES, describe, evaluate, score_fraction
from autograder.parts.prompts import PromptSet
from autograder.parts.pytest_part import CaseResult, hidden_tests, is_hidden
from autograder.results import ResultError, junit_xml, make_entry, parse_part_result, split_points, validate_gradescope
from autograder.spec import METRICS, CorrectnessSpec, GateSpec

ROOT = Path(__file__).resolve().parent.parent

SMALL_SPEC = """
assignment = "a1"
baseline = "a0"
reference = "a1"

[engine]
max_num_seqs = 16

[parts.tests]
points = 40
time_limit_s = {tests_limit}
instructor_dir = "{instructor_dir}"
public_dir = "assignments/a1/tests"
per_test_timeout_s = {per_test_timeout}

[parts.correctness]
points = 20
time_limit_s = {correctness_limit}
num_prompts = 3
concurrency = 3
max_tokens = 6

[parts.accuracy]
points = 20
time_limit_s = 240
mmlu_samples = 4
gsm8k_samples = 0
concurrency = 4
min_agreement = 1.0

[parts.performance]
points = 20
time_limit_s = 240
requires = ["correctness"]
input_len = 16
output_len = 8
concurrency = 4
num_requests = 8

[[parts.performance.gates]]
metric = "output_throughput"
compare = "ratio"
zero = 0.5
full = 1.1
points = 20
"""


def write_spec(tmp_path: Path, **overrides: Any) -> Path:
    values = {"tests_limit": 120, "instructor_dir": "solutions/a1/tests", "per_test_timeout": 30,
              "correctness_limit": 180, **overrides}
    path = tmp_path / "spec.toml"
    path.write_text(SMALL_SPEC.format(**values))
    return path


def grade(tmp_path: Path, *args: str, spec: Path | None = None, timeout: float = 600) -> tuple[dict[str, Any], Path, str]:
    """Run the grader; returns (results.json, the output directory, the console output)."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "autograder.grade", "a1", "--spec", str(spec or write_spec(tmp_path)),
               "--out", str(out), *args]
    proc = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert validate_gradescope(results) == [], validate_gradescope(results)
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))
    ET.parse(out / "junit.xml")  # well-formed
    assert (out / "report.md").read_text().startswith("# a1 grade:")
    return results, out, proc.stdout


def by_part(results: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [t for t in results["tests"] if t["name"].startswith(prefix)]


@pytest.fixture(scope="module")
def a1_cases() -> int:
    """How many test cases a1's instructor suite has: the tests part grades each as one entry."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "solutions/a1/tests"], check=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return sum("::" in line for line in proc.stdout.splitlines())


# ---- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_solution_gets_full_marks_on_every_part(tmp_path, a1_cases):
    results, out, stdout = grade(tmp_path, "--impl", "solution")
    assert results["score"] == pytest.approx(100.0), json.dumps(results, indent=1)[:4000]
    assert all(t["status"] == "passed" for t in results["tests"])
    assert {t["visibility"] for t in results["tests"]} <= {"visible", "after_published"}
    assert len(by_part(results, "solutions/a1/tests/")) == a1_cases  # one entry per test case
    assert len(by_part(results, "accuracy: MMLU")) == 1 and by_part(results, "performance:")
    assert out.joinpath("report.png").read_bytes()[:4] == b"\x89PNG"
    table = stdout[stdout.index("part "):]
    for part in ("tests", "correctness", "accuracy", "performance"):
        assert any(line.startswith(part) and "passed" in line for line in table.splitlines()), table
    perf = by_part(results, "performance:")[0]["output"]
    assert "out tok/s" in perf and "TTFT p50" in perf and "a0 baseline" in perf
    # batch-invariant greedy decoding: the same replies as the reference, item by item
    assert "replies identical to the reference's: 4/4 (at least 100% needed)" in by_part(results, "accuracy:")[0]["output"]


@pytest.mark.slow
def test_the_untouched_skeleton_gets_zero_and_a_valid_grade(tmp_path, a1_cases):
    results, out, _ = grade(tmp_path, "--impl", "student")
    assert results["score"] == 0
    tests = by_part(results, "solutions/a1/tests/")
    assert len(tests) == a1_cases and all(t["status"] == "failed" for t in tests)
    assert "NotImplementedError" in tests[0]["output"] and "handout" in tests[0]["output"]
    assert "not implemented yet" in by_part(results, "correctness:")[0]["output"]
    accuracy = by_part(results, "accuracy:")[0]["output"]
    assert "4 requests failed" in accuracy and "HTTP 500" in accuracy
    # performance needs full marks on correctness: not run, and it says why
    assert "needs full marks on correctness" in by_part(results, "performance:")[0]["output"]
    assert "| performance | 0 / 20 | not graded |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_scheduler_that_mixes_up_kv_fails_correctness_and_the_report_says_where(tmp_path):
    results, out, _ = grade(tmp_path, "--scheduler-module", "tests.schedulers.mixed_kv", "--parts", "correctness")
    [entry] = results["tests"]
    assert entry["score"] == 0 and entry["status"] == "failed"
    assert "block_table" in entry["output"] and "run alone" in entry["output"]
    assert "differ from running alone (req-0, req-1)" in entry["output"], entry["output"]
    assert "from token 1 on" in entry["output"]  # the first decode after the swap
    report_md = (out / "report.md").read_text()
    assert "req-0, req-1" in report_md and "block_table" in report_md


CORRECTNESS_ONLY = """
assignment = "a1"
baseline = "a0"
reference = "a1"

[parts.correctness]
points = 20
time_limit_s = 240
num_prompts = {num_prompts}
concurrency = {concurrency}
max_tokens = {max_tokens}
workload = "{workload}"
min_cached_tokens = {min_cached_tokens}

[profiles.small-pool.parts.correctness]
num_kv_blocks = 12
min_preemptions = 1
"""


def correctness_spec(tmp_path: Path, **values: Any) -> Path:
    defaults = {"num_prompts": 4, "concurrency": 4, "max_tokens": 24, "workload": "chat", "min_cached_tokens": 0}
    path = tmp_path / "correctness.toml"
    path.write_text(CORRECTNESS_ONLY.format(**{**defaults, **values}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("module, passes", [("prefix_cache", True), ("prefix_cache_writes_shared", False)])
def test_a_prefix_cache_passes_correctness_unless_it_writes_into_a_shared_block(tmp_path, module, passes):
    # Six prompts (one cycle of the workload: the identical block-aligned pair included), one at a
    # time so that a prompt's blocks are always cached before the prompts that share them arrive.
    spec = correctness_spec(tmp_path, workload="shared-prefix", num_prompts=6, concurrency=1, max_tokens=4,
                            min_cached_tokens=16)
    results, _, _ = grade(tmp_path, "--scheduler-module", f"tests.schedulers.{module}", spec=spec)
    [entry] = results["tests"]
    if passes:  # the blocks its cache keeps (held_blocks) are not a leak
        assert entry["score"] == 20, entry["output"]
        cached = int(entry["output"].split("preemptions; ")[1].split(" of ")[0])
        assert cached >= 16, entry["output"]
    else:
        assert entry["score"] == 0
        assert "writes KV at positions" in entry["output"] and "it is shared with" in entry["output"], entry["output"]


@pytest.mark.slow
@pytest.mark.parametrize("module, passes", [("tests.schedulers.preempt_on_demand", True), (None, False)])
def test_min_preemptions_under_a_small_pool_needs_a_scheduler_that_preempts(tmp_path, module, passes):
    # The requirement and the pool come from a profile: --profile reaches the part's process.
    args = ["--scheduler-module", module] if module else ["--impl", "solution"]
    results, out, _ = grade(tmp_path, *args, "--profile", "small-pool", spec=correctness_spec(tmp_path))
    [entry] = results["tests"]
    assert "profile `small-pool`" in (out / "report.md").read_text()
    if passes:
        assert entry["score"] == 20, entry["output"]
        assert " 0 preemptions" not in entry["output"]
    else:  # the a1 reference reserves every request's blocks up front: it waits, correct but never preempting
        assert entry["score"] == 0
        assert entry["output"].startswith("no sequence was preempted (at least 1 required), although the KV pool "
                                          "has 12 blocks"), entry["output"]


@pytest.mark.slow
def test_a_scheduler_that_hangs_times_out_with_a_valid_grade(tmp_path, a1_cases):
    spec = write_spec(tmp_path, correctness_limit=20, per_test_timeout=1)
    results, out, _ = grade(tmp_path, "--scheduler-module", "tests.schedulers.hang_in_schedule",
                            "--parts", "tests,correctness", spec=spec)
    [entry] = by_part(results, "correctness")
    assert entry["score"] == 0 and "timed out" in entry["output"] and "schedule()" in entry["output"]
    tests = by_part(results, "solutions/a1/tests/")
    assert len(tests) == a1_cases  # the suite finished: pytest-timeout cut each stuck test
    stuck = [t for t in tests if "Timeout" in t["output"]]
    assert len(stuck) >= 6 and all(t["score"] == 0 for t in stuck)  # only tests with nothing queued pass
    assert "timed out" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_scheduler_cannot_forge_its_own_results_json(tmp_path, a1_cases):
    results, out, _ = grade(tmp_path, "--scheduler-module", "tests.schedulers.forge_results", "--parts", "tests")
    assert results["score"] == 0 and results["output"] != "forged"
    assert not any(t["name"] == "forged" for t in results["tests"])
    assert len(results["tests"]) == a1_cases
    assert (out / "forged-by-scheduler.txt").exists()  # it found the output directory and wrote there
    assert not (ROOT / "results.json").exists()
    log = (out / "logs" / "tests.log").read_text()
    assert "deliberately broken after forging" in log  # it did run, and did try


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the subreaper is Linux's")
def test_a_daemon_left_behind_cannot_forge_results_json_later(tmp_path, a1_cases):
    # The daemon left the part's process group and waits for the honest results.json to
    # overwrite it; the grader must have killed it before writing.
    results, out, _ = grade(tmp_path, "--scheduler-module", "tests.schedulers.forge_daemon", "--parts", "tests")
    assert results["score"] == 0 and len(results["tests"]) == a1_cases
    pid = int((out / "daemon-started.txt").read_text())  # it did start, and found the output directory
    time.sleep(1.0)  # it polls every 50 ms: long enough for a live daemon to strike
    assert json.loads((out / "results.json").read_text()) == results
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped by the grader
    assert "killed 1 process(es) that the part left running" in (out / "report.md").read_text()


def test_hidden_tests_are_found_and_shown_after_publishing(tmp_path):
    tests = tmp_path / "instructor"
    tests.mkdir()
    (tests / "test_mixed.py").write_text(
        "def test_public():\n    assert True\n\n"
        "### BEGIN HIDDEN TESTS\n"
        "def test_secret():\n    assert 1 + 1 == 3, 'hidden check failed'\n"
        "### END HIDDEN TESTS\n"
    )
    (tests / "test_more_hidden.py").write_text("def test_whole_file_hidden():\n    assert True\n")
    hidden = hidden_tests(tests)
    assert hidden == {(tests / "test_mixed.py").resolve(): {"test_secret"},
                      (tests / "test_more_hidden.py").resolve(): None}
    case = CaseResult("x/test_mixed.py::test_secret[3]", (tests / "test_mixed.py").resolve(), False, "")
    assert is_hidden(case, hidden)
    results, _, _ = grade(tmp_path, "--impl", "solution", "--parts", "tests",
                          spec=write_spec(tmp_path, instructor_dir=str(tests)))
    visibility = {t["name"].rsplit("::", 1)[-1]: (t["visibility"], t["score"]) for t in results["tests"]}
    assert visibility == {"test_public": ("visible", pytest.approx(40 / 3, abs=1e-3)),
                          "test_secret": ("after_published", 0.0),
                          "test_whole_file_hidden": ("after_published", pytest.approx(40 / 3, abs=1e-3))}
    assert results["score"] == pytest.approx(80 / 3, abs=1e-3)


@pytest.mark.parametrize("content, message", [
    ("def test_broken(:\n    pass\n", "could not be collected"),
    ("def helper():\n    pass\n", "no tests were collected"),
])
def test_a_suite_that_cannot_be_collected_scores_zero_and_says_so(tmp_path, content, message):
    tests = tmp_path / "instructor"
    tests.mkdir()
    (tests / "test_suite.py").write_text(content)
    results, _, _ = grade(tmp_path, "--impl", "solution", "--parts", "tests",
                          spec=write_spec(tmp_path, instructor_dir=str(tests)))
    [entry] = results["tests"]
    assert entry["name"] == "tests: collection" and entry["score"] == 0 and entry["max_score"] == 40
    assert message in entry["output"], entry["output"]


def test_bad_usage_exits_2_with_one_line(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "autograder.grade", *args], check=False, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    for args, message in [
        (["a9"], "unknown assignment a9"),
        (["a1", "--profile", "tpu"], "there is no [profiles.tpu]"),
        (["hello"], "not an assignment name"),
        (["a1", "--parts", "tests,speed"], "unknown part 'speed'"),
        (["a1", "--spec", str(tmp_path / "missing.toml")], "no grading spec"),
        (["a1", "--impl", "teacher"], "invalid choice"),
    ]:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---- the pieces --------------------------------------------------------------------------------


def test_part_results_are_checked_and_clamped():
    good = {"part": "tests", "summary": "ok", "metrics": {},
            "tests": [{"name": "a", "score": 99, "max_score": 5}, {"name": "b", "score": -1, "max_score": 5}]}
    result = parse_part_result(good, "tests", 10)
    assert [e.score for e in result.entries] == [5, 0]  # clamped into [0, max_score]
    for bad, message in [
        ({**good, "part": "performance"}, "for part"),
        ({**good, "tests": []}, "no test entries"),
        ({**good, "tests": [{"name": "a", "score": 1000, "max_score": 1000}]}, "add up to 1000"),
        ({**good, "tests": [{"name": "a", "score": float("nan"), "max_score": 10}]}, "no valid score"),
        ({**good, "tests": [{"name": "a", "score": 1, "max_score": 10, "visibility": "public"}]}, "visibility"),
        ([1, 2], "not a JSON object"),
    ]:
        with pytest.raises(ResultError, match=message):
            parse_part_result(bad, "tests", 10)


def test_agreement_counts_identical_replies_and_names_the_others():
    ref = {"items": [{"id": "mmlu/a/0", "reply": "A"}, {"id": "mmlu/a/1", "reply": "B"}, {"id": "mmlu/a/2", "reply": None}]}
    got = {"items": [{"id": "mmlu/a/0", "reply": "A"}, {"id": "mmlu/a/1", "reply": "C"}, {"id": "mmlu/a/2", "reply": None}]}
    assert agreement(got, ref) == (1, ["mmlu/a/1", "mmlu/a/2"])  # a failed request never agrees


def test_scores_split_and_scale_exactly():
    assert sum(split_points(40, 3)) == pytest.approx(40, abs=1e-9)
    assert split_points(40, 8) == [5.0] * 8
    assert score_fraction(1.2, 1.2, 3.0) == 0 and score_fraction(3.5, 1.2, 3.0) == 1
    assert score_fraction(2.1, 1.2, 3.0) == pytest.approx(0.5)
    assert score_fraction(300, 500, 100) == pytest.approx(0.5) and score_fraction(50, 500, 100) == 1


def gate(metric: str, compare: str, zero: float, full: float, points: float = 10, **extra: Any) -> GateSpec:
    return GateSpec(metric, compare, zero, full, points, **extra)


def test_gates_score_ratios_and_absolute_figures_in_either_direction():
    fast = {"output_throughput_tok_s": 300.0, "ttft_p50_ms": 100.0, "spec_accept_length": 2.5,
            "by_kind": {"short": {"itl_p99_ms": 20.0}}}
    slow = {"output_throughput_tok_s": 100.0, "ttft_p50_ms": 400.0, "spec_accept_length": None,
            "by_kind": {"short": {"itl_p99_ms": 80.0}}}
    throughput = evaluate(gate("output_throughput", "ratio", 1.0, 5.0), fast, slow)
    assert throughput.value == pytest.approx(3.0) and throughput.fraction == pytest.approx(0.5)
    # A ratio of latencies is baseline / graded: above 1 when the graded scheduler is faster.
    assert evaluate(gate("ttft_p50", "ratio", 1.0, 4.0), fast, slow).fraction == pytest.approx(1.0)
    assert evaluate(gate("ttft_p50", "ratio", 1.0, 4.0), slow, fast).fraction == 0.0
    short_itl = evaluate(gate("itl_p99", "ratio", 1.0, 3.0, requests="short"), fast, slow)
    assert short_itl.value == pytest.approx(4.0) and short_itl.fraction == 1.0
    # Absolute: higher is better for the accept length, lower for a latency (full below zero).
    assert evaluate(gate("accept_length", "absolute", 1.0, 3.0), fast, None).fraction == pytest.approx(0.75)
    assert evaluate(gate("ttft_p50", "absolute", 500.0, 100.0), slow, None).fraction == pytest.approx(0.25)
    assert evaluate(gate("ttft_p50", "absolute", 500.0, 100.0, direction="lower"), fast, None).fraction == 1.0
    # Not measured (no drafts, so no accept length): no points, and the line says why.
    unmeasured = evaluate(gate("accept_length", "absolute", 1.0, 3.0), slow, None)
    assert unmeasured.value is None and unmeasured.fraction == 0.0
    assert "no draft was proposed" in describe(unmeasured, "a0 baseline")
    assert "baseline / yours = 4.00x" in describe(evaluate(gate("ttft_p50", "ratio", 1.0, 4.0), fast, slow), "a0")
    # Several gates: each earns its share of its own points.
    gates = [gate("output_throughput", "ratio", 1.0, 5.0, points=12), gate("accept_length", "absolute", 1.0, 3.0,
                                                                           points=8)]
    outcomes = [evaluate(g, fast, slow) for g in gates]
    assert sum(make_entry("g", o.fraction, o.gate.points).score for o in outcomes) == pytest.approx(12 * 0.5 + 8 * 0.75)
    assert set(FIGURES) == set(METRICS)  # every metric a spec may name can be found in a level


def test_missing_counts_say_what_did_not_happen_and_why():
    spec = CorrectnessSpec(points=20, time_limit_s=60, concurrency=4, max_tokens=24, min_preemptions=1,
                           min_cached_tokens=16, min_accepted_tokens=8)
    workload = Workload(PromptSet([[1] * 40] * 4, "each prompt repeats a passage"), None, 12, 16)  # type: ignore[arg-type]
    counters = {"num_preemptions": 0, "num_cached_tokens": 0, "num_prompt_tokens": 160, "num_drafts": 3,
                "num_draft_tokens": 12, "num_accepted_tokens": 5}
    preempt, cached, accepted = counter_shortfalls(spec, workload, counters)
    assert preempt.startswith("no sequence was preempted (at least 1 required), although the KV pool has 12 blocks "
                              "of 16 tokens for 4 concurrent requests of up to 64 tokens (4 blocks each)")
    assert cached.startswith("no prompt token was served from the prefix cache (at least 16 required), although "
                             "each prompt repeats a passage")
    assert accepted.startswith("only 5 draft tokens were accepted (at least 8 required)")
    assert "3 drafts of 12 tokens were proposed" in accepted
    enough = {**counters, "num_preemptions": 1, "num_cached_tokens": 16, "num_accepted_tokens": 8}
    assert counter_shortfalls(spec, workload, enough) == []


def test_report_md_shows_the_figures_counters_and_gates():
    graded = {"output_throughput_tok_s": 19.2, "ttft_p50_ms": 1009.0, "spec_accept_length": 2.88, "num_preemptions": 0}
    baseline = {"output_throughput_tok_s": 7.6, "ttft_p50_ms": 9999.0}
    gates = [{"metric": "accept_length", "compare": "absolute", "value": 2.88, "zero": 1.0, "full": 1.5, "points": 6,
              "fraction": 1.0},
             {"metric": "tpot_p50", "compare": "ratio", "value": 0.767, "zero": 1.0, "full": 1.3, "points": 4,
              "fraction": 0.0}]
    metrics = {"workload": "repetitive", "baseline_label": "a0 baseline", "student": graded, "baseline": baseline,
               "gates": gates}
    text = "\n".join(report.performance_section(metrics))
    assert "## Performance (repetitive workload)" in text
    assert "| graded | 19.2 | 1009 |" in text and "| a0 baseline | 7.6 | 9999 |" in text
    assert "accept len |" in text and "| 2.88 |" in text  # the server's counters have columns
    assert "| accept length (absolute) | 2.88 | 1 | 1.5 | 6 / 6 |" in text
    assert "| TPOT p50 (ratio) | 0.767x | 1x | 1.3x | 0 / 4 |" in text
    without_counters = {**metrics, "student": {"output_throughput_tok_s": 19.2}, "baseline": None}
    assert "preempt" not in "\n".join(report.performance_section(without_counters))
    assert report.performance_section({}) == []  # the part did not measure anything


def test_junit_has_one_testcase_per_entry_with_failures():
    entries = [make_entry("ok", 1.0, 5, part="tests"), make_entry("bad", 0.0, 5, "boom\x00\nmore", part="tests")]
    root = ET.fromstring(junit_xml(entries, "a1", 3.0))
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["ok", "bad"]
    failure, suite = cases[1].find("failure"), root.find("testsuite")
    assert cases[0].find("failure") is None and failure is not None and failure.text == "boom\nmore"
    assert suite is not None and suite.get("failures") == "1"
