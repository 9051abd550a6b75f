"""a1's hidden tests, graded: the reference passes them, each wrong a1 scheduler fails one, the skeleton scores nothing.

Each test runs the grader's tests part (``python -m autograder.grade a1 --parts tests``) on a1's
own spec, as Gradescope would, and reads results.json. The wrong schedulers in
``tests/schedulers/a1_*.py`` each make one plausible mistake that no public test catches: that
is what the hidden tests are for. A grading run takes about 20 s on a 2-core CPU (most of it
importing torch), so all but the reference's run are marked slow.
"""

from __future__ import annotations

from typing import Any

import pytest

from autograder.spec import default_spec_path

from .test_grader import grade

HIDDEN = "solutions/a1/tests/test_a1_hidden.py::"
PUBLIC = "solutions/a1/tests/test_a1_public.py::"


def graded_tests(tmp_path, *args: str) -> dict[str, dict[str, Any]]:
    """The tests part's entries in results.json, by test id."""
    results, _, _ = grade(tmp_path, "--parts", "tests", *args, spec=default_spec_path("a1"))
    return {entry["name"]: entry for entry in results["tests"]}


def lost_points(tests: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name, entry in tests.items() if entry["score"] < entry["max_score"]]


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
    ("a1_overtakes", ["test_later_requests_do_not_overtake_the_oldest_when_it_does_not_fit[short-of-blocks]",
                      "test_later_requests_do_not_overtake_the_oldest_when_it_does_not_fit[short-of-tokens]"]),
    ("a1_budget_ignores_decodes", ["test_decode_tokens_count_against_the_token_budget"]),
    ("a1_rounds_blocks_down", ["test_reserved_blocks_cover_every_token_the_sequence_runs"]),
    ("a1_long_prompt_waits", ["test_a_prompt_longer_than_the_token_budget_runs_alone_a_budget_at_a_time"]),
    ("a1_abort_stays_queued", ["test_finishing_a_request_that_still_waits_drops_it_and_frees_nothing"]),
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
