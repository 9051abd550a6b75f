"""A mkdocs hook (``hooks:`` in mkdocs.yml): the Assignments section lists every handout found.

The handouts are ``docs/assignments/aN.md``, in course order, each titled by its first
heading; mkdocs.yml names the section and leaves it empty. Adding an assignment's handout is
enough for it to appear in the site (and a student release, which leaves out the handouts of
assignments not yet released, shows only its own).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

SECTION = "Assignments"


def _assignments_module() -> Any:
    """``autograder.assignments`` by file: mkdocs loads hooks by path, with no package around them."""
    path = Path(__file__).with_name("assignments.py")
    spec = importlib.util.spec_from_file_location("_course_assignments", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assignment_nav(docs_dir: Path) -> list[dict[str, str]]:
    """``[{"a0: the baseline ...": "assignments/a0.md"}, ...]`` for every handout in ``docs_dir``."""
    assignments = _assignments_module()
    root = docs_dir.parent
    handouts = [p.stem for p in (docs_dir / "assignments").glob("a*.md") if assignments.is_name(p.stem)]
    return [{assignments.handout_title(name, root): f"assignments/{name}.md"}
            for name in sorted(handouts, key=lambda name: int(name[1:]))]


def on_config(config: Any) -> Any:
    """Fill the (empty) Assignments section of the nav."""
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and SECTION in entry:
            entry[SECTION] = assignment_nav(Path(config["docs_dir"]))
    return config
