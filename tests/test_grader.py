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

from autograder.parts.accuracy import agreement
from autograder.parts.gates import FIGURES, GateOutcome, describe, evaluate, score_fraction
from autograder.parts.pytest_part import CaseResult, hidden_tests, is_hidden
from autograder.results import ResultError, junit_xml, make_entry, parse_part_result, split_points, validate_gradescope
from autograder.spec import METRICS, GateSpec, SpecError, load_spec

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


# ---- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_solution_gets_full_marks_on_every_part(tmp_path):
    results, out, stdout = grade(tmp_path, "--impl", "solution")
    assert results["score"] == pytest.approx(100.0), json.dumps(results, indent=1)[:4000]
    assert all(t["status"] == "passed" for t in results["tests"])
    assert {t["visibility"] for t in results["tests"]} <= {"visible", "after_published"}
    assert len(by_part(results, "solutions/a1/tests/")) == 8  # one entry per test case
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
def test_the_untouched_skeleton_gets_zero_and_a_valid_grade(tmp_path):
    results, out, _ = grade(tmp_path, "--impl", "student")
    assert results["score"] == 0
    tests = by_part(results, "solutions/a1/tests/")
    assert len(tests) == 8 and all(t["status"] == "failed" for t in tests)
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


@pytest.mark.slow
def test_a_scheduler_that_hangs_times_out_with_a_valid_grade(tmp_path):
    spec = write_spec(tmp_path, correctness_limit=20, per_test_timeout=1)
    results, out, _ = grade(tmp_path, "--scheduler-module", "tests.schedulers.hang_in_schedule",
                            "--parts", "tests,correctness", spec=spec)
    [entry] = by_part(results, "correctness")
    assert entry["score"] == 0 and "timed out" in entry["output"] and "schedule()" in entry["output"]
    tests = by_part(results, "solutions/a1/tests/")
    assert len(tests) == 8  # the suite finished: pytest-timeout cut each stuck test
    stuck = [t for t in tests if "Timeout" in t["output"]]
    assert len(stuck) >= 6 and all(t["score"] == 0 for t in stuck)  # only tests with nothing queued pass
    assert "timed out" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_scheduler_cannot_forge_its_own_results_json(tmp_path):
    results, out, _ = grade(tmp_path, "--scheduler-module", "tests.schedulers.forge_results", "--parts", "tests")
    assert results["score"] == 0 and results["output"] != "forged"
    assert not any(t["name"] == "forged" for t in results["tests"])
    assert len(results["tests"]) == 8
    assert (out / "forged-by-scheduler.txt").exists()  # it found the output directory and wrote there
    assert not (ROOT / "results.json").exists()
    log = (out / "logs" / "tests.log").read_text()
    assert "deliberately broken after forging" in log  # it did run, and did try


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the subreaper is Linux's")
def test_a_daemon_left_behind_cannot_forge_results_json_later(tmp_path):
    # The daemon left the part's process group and waits for the honest results.json to
    # overwrite it; the grader must have killed it before writing.
    results, out, _ = grade(tmp_path, "--scheduler-module", "tests.schedulers.forge_daemon", "--parts", "tests")
    assert results["score"] == 0 and len(results["tests"]) == 8
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
        (["hello"], "not an assignment name"),
        (["a1", "--parts", "tests,speed"], "unknown part 'speed'"),
        (["a1", "--spec", str(tmp_path / "missing.toml")], "no grading spec"),
        (["a1", "--impl", "teacher"], "invalid choice"),
    ]:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---- the pieces --------------------------------------------------------------------------------


def test_the_default_spec_loads_and_documents_every_field():
    spec = load_spec(ROOT / "solutions" / "a1" / "spec.toml")
    assert spec.total_points == 100 and list(spec.parts) == ["tests", "correctness", "accuracy", "performance"]
    assert spec.parts["performance"].requires == ("correctness",)
    text = (ROOT / "solutions" / "a1" / "spec.toml").read_text()
    for line in text.splitlines():  # every key has a comment on its line or just above it
        if "=" in line and not line.lstrip().startswith("#"):
            index = text.splitlines().index(line)
            assert "#" in line or text.splitlines()[index - 1].lstrip().startswith("#"), line


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("num_prompts = 3", "num_promts = 3"), "unknown key 'num_promts'"),
    (lambda s: s.replace("points = 20\ntime_limit_s = 240\nmmlu", "time_limit_s = 240\nmmlu"), "missing key 'points'"),
    (lambda s: s.replace("max_tokens = 6", "max_tokens = 'six'"), "must be an integer"),
    (lambda s: s.replace('requires = ["correctness"]', 'requires = ["performance"]'), "not a part graded before"),
    (lambda s: s.replace("full = 1.1", "full = 0.4"), "ratio gate needs full > zero"),
])
def test_spec_errors_name_the_key(tmp_path, edit, message):
    path = write_spec(tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


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


def test_junit_has_one_testcase_per_entry_with_failures():
    entries = [make_entry("ok", 1.0, 5, part="tests"), make_entry("bad", 0.0, 5, "boom\x00\nmore", part="tests")]
    root = ET.fromstring(junit_xml(entries, "a1", 3.0))
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["ok", "bad"]
    failure, suite = cases[1].find("failure"), root.find("testsuite")
    assert cases[0].find("failure") is None and failure is not None and failure.text == "boom\nmore"
    assert suite is not None and suite.get("failures") == "1"
