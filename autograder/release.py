"""Write the repository students receive: ``python -m autograder.release DEST [--upto aN]``.

    python -m autograder.release ../course-release             every assignment
    python -m autograder.release ../course-release --upto a1   a0 and a1 only (the release for a1)

The release holds the frozen engine, the benchmarks, the grader, the course site, the given
a0 and the published skeletons with their public tests and grading specs, up to ``--upto``;
its README and noxfile are the students' own (``autograder/student_tree/``), and every
command in them works there. It holds no ``solutions/``, no hidden test, no solution text and
none of the instructor tools (publishing, the Gradescope bundle, this module).

Courses release assignments one after another: a later skeleton keeps the earlier reference
(the solution of a2 marks only what a2 adds, so the a2 skeleton contains a working a1), and the
references of the earlier assignments ship in ``references/`` (the grader compares a2 with the
a1 reference there). Release with ``--upto`` the assignment being handed out, so that nothing
gives away the solution of one still open.

Before anything is written to DEST, the staged tree is searched for what must never reach
students (:func:`find_leaks`); the release is refused with the list if anything is found.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from . import assignments
from .gradescope import BundleError, project_files
from .parts.pytest_part import hidden_tests
from .publish import BEGIN_SOLUTION, END_SOLUTION, MARKERS, PublishError, publish_tree

ROOT = assignments.ROOT
STUDENT_TREE = Path(__file__).resolve().parent / "student_tree"
REFERENCES = "references"
COPIED_DIRS = ("engine_core", "benchmark", "autograder", "docs")
COPIED_FILES = ("pyproject.toml", "mkdocs.yml", ".gitignore", "LICENSE")
# Instructor tools: useless without solutions/, and a student has no business with them.
INSTRUCTOR_ONLY = ("autograder/publish.py", "autograder/gradescope.py", "autograder/release.py",
                   "autograder/student_tree/")
# A solution block shorter than this is a line any scheduler could hold (`self.waiting.append(seq)`).
MIN_LEAK_LINES = 2


class ReleaseError(RuntimeError):
    """The release cannot be written; the message says why."""


def released_names(upto: str | None, root: Path = ROOT) -> list[str]:
    """The assignments a release up to ``upto`` holds (default: all of them)."""
    names = assignments.names(root, assignments.SOLUTIONS)
    if not names:
        raise ReleaseError(f"no assignment in {root / assignments.SOLUTIONS}: "
                           "a release is written from the instructor tree")
    if upto is None:
        return names
    if upto not in names:
        raise ReleaseError(f"--upto {upto}: no such assignment (there are {', '.join(names)})")
    if upto == names[0]:
        raise ReleaseError(f"--upto {upto}: {upto} is given whole; release at least the first assignment after it")
    return names[: names.index(upto) + 1]


def write_release(dest: Path, upto: str | None = None, root: Path = ROOT) -> list[str]:
    """Stage the student tree, check it for leaks, then move it to ``dest``; returns the released assignments."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ReleaseError(f"{dest} exists and is not empty: choose a new folder")
    names = released_names(upto, root)
    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        staged = Path(tmp) / "release"
        _copy_project(root, staged, names)
        try:
            publish_tree(root / assignments.SOLUTIONS, staged / assignments.PUBLISHED, names)
        except PublishError as err:
            raise ReleaseError(f"publishing the skeletons fails: {err}") from err
        _write_references(staged, names[:-1], root)
        _write_student_files(staged, names, root)
        leaks = find_leaks(staged, root, names)
        if leaks:
            raise ReleaseError("refusing to release, students would see:\n  " + "\n  ".join(leaks))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.rmdir()
        shutil.copytree(staged, dest)
    return names


def _copy_project(root: Path, staged: Path, names: list[str]) -> None:
    files: list[str] = []
    try:
        for top in COPIED_DIRS:
            files += project_files(root, top)
    except BundleError as err:
        raise ReleaseError(str(err)) from err
    files += [name for name in COPIED_FILES if (root / name).is_file()]
    for rel in files:
        if rel.startswith(INSTRUCTOR_ONLY) or _unreleased_handout(rel, names):
            continue
        target = staged / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target)


def _unreleased_handout(rel: str, names: list[str]) -> bool:
    match = re.fullmatch(r"docs/assignments/(a\d+)\.md", rel)
    return match is not None and match.group(1) not in names


def _write_references(staged: Path, names: list[str], root: Path) -> None:
    """``references/<aN>/scheduler.py``: each earlier solution with its markers dropped, code kept."""
    for name in names:
        source = (root / assignments.SOLUTIONS / name / "scheduler.py").read_text(encoding="utf-8")
        if BEGIN_SOLUTION not in source:
            continue  # given whole (a0): the published copy is the reference
        lines = [line for line in source.splitlines(keepends=True)
                 if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION)]
        target = staged / REFERENCES / name / "scheduler.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(lines), encoding="utf-8")
        (target.parent / "__init__.py").write_text("")
        (staged / REFERENCES / "__init__.py").write_text(
            '"""References of the assignments whose deadlines have passed: the grader\'s baselines."""\n')


def _write_student_files(staged: Path, names: list[str], root: Path) -> None:
    """The students' README (with their assignments listed) and noxfile."""
    latest = names[-1]
    rows = "\n".join(f"| `{name}` | {assignments.handout_title(name, root)} | `docs/assignments/{name}.md` |"
                     for name in names)
    readme = (STUDENT_TREE / "README.md").read_text(encoding="utf-8")
    readme = readme.replace("@ASSIGNMENTS@", rows).replace("@LATEST@", latest)
    (staged / "README.md").write_text(readme, encoding="utf-8")
    shutil.copyfile(STUDENT_TREE / "noxfile.py", staged / "noxfile.py")


def find_leaks(tree: Path, root: Path = ROOT, names: list[str] | None = None) -> list[str]:
    """What in ``tree`` students must not see: a solutions folder, marker text, a hidden test, solution text.

    The solution of an assignment may appear only in the skeletons of later assignments (after
    its deadline, they start from it) and in its released reference. A block copied unchanged
    from an earlier solution counts as that earlier assignment's text, not as a second secret.
    """
    names = names if names is not None else assignments.names(root, assignments.SOLUTIONS)
    leaks = [f"{tree.name}/solutions/"] if (tree / assignments.SOLUTIONS).exists() else []
    hidden_names = _hidden_test_names(root, names)
    blocks = _own_solution_blocks(root, names)
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        rel = path.relative_to(tree).as_posix()
        text = path.read_text(encoding="utf-8", errors="ignore")
        if rel.startswith(f"{assignments.PUBLISHED}/") and rel.endswith(".py"):  # (specs and the grader name them)
            leaks += [f"{rel}: marker {marker!r}" for marker in MARKERS if marker in text]
        leaks += [f"{rel}: hidden test {test}" for test in sorted(hidden_names)
                  if re.search(rf"\bdef {re.escape(test)}\b", text)]
        flat = _flatten(text)
        for name, name_blocks in blocks.items():
            if _after_deadline(rel, name, names):
                continue
            leaks += [f"{rel}: solution text of {name} ({block[:60]}...)" for block in name_blocks if block in flat]
    return leaks


def _hidden_test_names(root: Path, names: list[str]) -> set[str]:
    found: set[str] = set()
    for name in names:
        tests_dir = assignments.instructor_tests(name, root)
        if not tests_dir.is_dir():
            continue
        for path, defined in hidden_tests(tests_dir).items():
            found |= defined if defined is not None else set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    return found


def _own_solution_blocks(root: Path, names: list[str]) -> dict[str, list[str]]:
    """Each assignment's solution blocks, less those found in an earlier assignment's solution."""
    own: dict[str, list[str]] = {}
    earlier = ""
    for name in names:
        path = root / assignments.SOLUTIONS / name / "scheduler.py"
        own[name] = [block for block in _solution_blocks(path) if block not in earlier]
        if path.is_file():
            earlier += " " + _flatten(path.read_text(encoding="utf-8"))
    return own


def _solution_blocks(path: Path) -> list[str]:
    """The text of each solution block of ``path`` with at least MIN_LEAK_LINES lines, whitespace flattened."""
    if not path.is_file():
        return []
    blocks: list[str] = []
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            current = []
        elif stripped == END_SOLUTION and current is not None:
            code = [c for c in current if c and not c.startswith("#")]
            if len(code) >= MIN_LEAK_LINES:
                blocks.append(" ".join(code))
            current = None
        elif current is not None:
            current.append(stripped)
    return blocks


def _flatten(text: str) -> str:
    lines = (line.strip() for line in text.splitlines())
    return " ".join(line for line in lines if line and not line.startswith("#"))


def _after_deadline(rel: str, name: str, names: list[str]) -> bool:
    """Whether ``rel`` may hold ``name``'s solution: a later skeleton, or its released reference."""
    if rel == f"{REFERENCES}/{name}/scheduler.py":
        return name != names[-1]
    match = re.fullmatch(rf"(?:{assignments.PUBLISHED}|{REFERENCES})/(a\d+)/scheduler\.py", rel)
    return match is not None and match.group(1) in names and names.index(match.group(1)) > names.index(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.release",
        description="Write the repository students receive (no solutions, no hidden tests).")
    parser.add_argument("dest", type=Path, help="a new (or empty) folder to write the release into")
    parser.add_argument("--upto", default=None, metavar="aN",
                        help="release the assignments up to this one (default: every assignment)")
    args = parser.parse_args(argv)
    try:
        names = write_release(args.dest, args.upto)
    except ReleaseError as err:
        print(f"release: {err}", file=sys.stderr)
        return 2
    print(f"wrote the student release of {', '.join(names)} to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
