"""Where the course's assignments are: found by looking, never listed.

An assignment is one folder, ``solutions/aN/`` in the instructor tree (``assignments/aN/`` in
a student release, which has no ``solutions/``)::

    solutions/aN/
        scheduler.py     the reference scheduler, with ### BEGIN/END SOLUTION markers
        spec.toml        its grading spec (published with the skeleton: students grade themselves)
        tests/           public tests, plus ### BEGIN HIDDEN TESTS blocks and test_*hidden*.py files
    docs/assignments/aN.md   its handout, found by name

Everything that needs the list of assignments (the docs navigation, the grader, publishing,
the Gradescope bundle, the student release and the project's tests) asks this module.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"a\d+")
SOLUTIONS, PUBLISHED = "solutions", "assignments"


def is_name(text: str) -> bool:
    """Whether ``text`` names an assignment (``a0``, ``a1``, ``a12``...)."""
    return NAME.fullmatch(text) is not None


def _key(name: str) -> int:
    return int(name[1:])


def names(root: Path = ROOT, tree: str | None = None) -> list[str]:
    """Assignments with a scheduler, in course order; from ``solutions/`` when it exists."""
    base = root / (tree or source_tree(root))
    if not base.is_dir():
        return []
    found = [p.name for p in base.iterdir() if is_name(p.name) and (p / "scheduler.py").is_file()]
    return sorted(found, key=_key)


def graded_names(root: Path = ROOT) -> list[str]:
    """Assignments that have a grading spec (a0 is given, so it has none)."""
    return [name for name in names(root) if spec_path(name, root).is_file()]


def source_tree(root: Path = ROOT) -> str:
    """``solutions`` in the instructor tree, ``assignments`` in a student release."""
    return SOLUTIONS if (root / SOLUTIONS).is_dir() else PUBLISHED


def folder(name: str, root: Path = ROOT) -> Path:
    """The assignment's folder: the solution where it exists, else the published one."""
    solution = root / SOLUTIONS / name
    return solution if solution.is_dir() else root / PUBLISHED / name


def spec_path(name: str, root: Path = ROOT) -> Path:
    return folder(name, root) / "spec.toml"


def handout_path(name: str, root: Path = ROOT) -> Path:
    return root / "docs" / "assignments" / f"{name}.md"


def instructor_tests(name: str, root: Path = ROOT) -> Path:
    """Public and hidden tests: only in the instructor tree."""
    return root / SOLUTIONS / name / "tests"


def public_tests(name: str, root: Path = ROOT) -> Path:
    return root / PUBLISHED / name / "tests"


def handout_title(name: str, root: Path = ROOT) -> str:
    """The handout's first heading without the ``#`` (``a1: continuous batching``), else the name."""
    path = handout_path(name, root)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return name
