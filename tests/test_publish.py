"""Publishing skeletons from solutions: the rewrite itself, and that assignments/ is up to date."""

from __future__ import annotations

import ast

import pytest

from autograder.publish import PublishError, publish, strip_hidden_tests, strip_solutions

SOLUTION = '''\
class Sched:
    def schedule(self) -> list:
        """Pick this step's work."""
        ### BEGIN SOLUTION
        return [1, 2]
        ### END SOLUTION
'''

TESTS = '''\
def test_public():
    assert True
### BEGIN HIDDEN TESTS
def test_secret():
    assert "answer" == "answer"
### END HIDDEN TESTS
'''


def test_solution_blocks_become_a_hint_that_names_the_method():
    skeleton = strip_solutions(SOLUTION, "a9")
    ast.parse(skeleton)
    assert "return [1, 2]" not in skeleton and "SOLUTION" not in skeleton
    assert 'raise NotImplementedError("a9: Sched.schedule: pick this step\'s work (see the a9 handout)")' in skeleton
    namespace: dict = {}
    exec(skeleton, namespace)
    with pytest.raises(NotImplementedError, match="a9: Sched.schedule"):
        namespace["Sched"]().schedule()


def test_hidden_tests_are_removed():
    public = strip_hidden_tests(TESTS)
    assert "test_public" in public and "test_secret" not in public and "HIDDEN" not in public


@pytest.mark.parametrize(
    "broken",
    ["### BEGIN SOLUTION\nx = 1\n", "x = 1\n### END SOLUTION\n", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n"],
)
def test_unbalanced_markers_are_refused_with_a_line_number(broken):
    with pytest.raises(PublishError, match=r"<solution>:\d+"):
        strip_solutions(broken, "a9")


def test_assignments_match_what_publishing_produces():
    changed = publish(check=True)
    assert changed == [], f"assignments/ is out of date (run `nox -s publish`): {changed}"


def test_hidden_tests_never_reach_assignments():
    from autograder.publish import ROOT

    for path in (ROOT / "assignments").rglob("*.py"):
        text = path.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text, path


def test_instructor_only_files_are_not_published(tmp_path):
    from autograder.publish import INSTRUCTOR_ONLY, ROOT, publish_assignment

    # a5's SLO reference stays in the instructor tree; the rest of a5 is published as usual.
    assert (ROOT / "solutions" / "a5" / "slo_scheduler.py").read_text().startswith(INSTRUCTOR_ONLY)
    assert not (ROOT / "assignments" / "a5" / "slo_scheduler.py").exists()
    solution = tmp_path / "solutions" / "a9"
    solution.mkdir(parents=True)
    (solution / "scheduler.py").write_text("X = 1\n")
    (solution / "extension.py").write_text(f"{INSTRUCTOR_ONLY}: the course's own answer\nY = 2\n")
    publish_assignment(solution, tmp_path / "assignments" / "a9")
    assert sorted(p.name for p in (tmp_path / "assignments" / "a9").iterdir()) == ["scheduler.py"]
