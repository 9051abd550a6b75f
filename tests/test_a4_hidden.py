"""a4's hidden tests, graded: the reference passes them, each wrong a4 scheduler fails one, the skeleton scores nothing.

Each test runs the grader's tests part (``python -m autograder.grade a4 --parts tests``) on a4's
own spec, as Gradescope would, and reads results.json. The wrong schedulers in
``tests/schedulers/a4_*.py`` each make one plausible mistake that no public test catches: that
is what the hidden tests are for. A grading run takes about 11 s on a 2-core CPU (most of it
importing torch), so all but the reference's run are marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autograder.results import validate_gradescope

from .test_a1_hidden import lost_points

HIDDEN = "solutions/a4/tests/test_a4_hidden.py::"
PUBLIC = "solutions/a4/tests/test_a4_public.py::"
ROOT = Path(__file__).resolve().parent.parent


def graded_tests(tmp_path: Path, *args: str) -> dict[str, dict[str, Any]]:
    """The tests part's entries in a4's results.json, by test id."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "autograder.grade", "a4", "--parts", "tests", "--out", str(out),
                           "--quiet", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert validate_gradescope(results) == [], validate_gradescope(results)
    return {entry["name"]: entry for entry in results["tests"]}


def test_the_reference_passes_every_public_and_hidden_test(tmp_path):
    tests = graded_tests(tmp_path, "--impl", "solution")
    assert lost_points(tests) == []
    hidden = [name for name in tests if name.startswith(HIDDEN)]
    assert len(hidden) >= 8 and all(tests[name]["visibility"] == "after_published" for name in hidden)
    public = [name for name in tests if name.startswith(PUBLIC)]
    assert public and all(tests[name]["visibility"] == "visible" for name in public)
    assert len(hidden) + len(public) == len(tests)


@pytest.mark.slow
@pytest.mark.parametrize("module, caught_by", [
    ("a4_unchained_keys", ["test_the_same_tokens_after_another_prefix_are_not_a_hit"]),
    ("a4_matches_in_add", ["test_a_request_that_waited_finds_what_was_cached_while_it_waited",
                           "test_a_waiting_request_holds_no_blocks"]),
    ("a4_shares_the_last_block", ["test_an_identical_block_aligned_prompt_recomputes_its_last_block[first-finished]",
                                  "test_an_identical_block_aligned_prompt_recomputes_its_last_block[first-decoding]"]),
    ("a4_evicts_held_blocks", ["test_cached_blocks_that_a_running_sequence_holds_are_never_evicted"]),
])
def test_a_wrong_scheduler_passes_the_public_tests_and_loses_points_on_a_hidden_one(tmp_path, module, caught_by):
    tests = graded_tests(tmp_path, "--scheduler-module", f"tests.schedulers.{module}")
    lost = lost_points(tests)
    assert not [name for name in lost if name.startswith(PUBLIC)], lost
    assert {HIDDEN + name for name in caught_by} <= set(lost), lost


@pytest.mark.slow
def test_the_published_skeleton_loses_every_test_point(tmp_path):
    tests = graded_tests(tmp_path, "--impl", "student")
    assert any(name.startswith(HIDDEN) for name in tests)
    assert all(entry["score"] == 0 for entry in tests.values())
    assert all("NotImplementedError" in entry["output"] for entry in tests.values())
