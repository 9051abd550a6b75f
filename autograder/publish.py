"""Publish student skeletons from the reference solutions.

    python -m autograder.publish            write assignments/ from solutions/
    python -m autograder.publish --check    fail if assignments/ differs from what would be written

Solutions mark what students write, nbgrader-style::

    def schedule(self) -> list[ScheduledSeq]:
        \"\"\"Decode every running sequence and admit as many waiting ones as fit.\"\"\"
        ### BEGIN SOLUTION
        ...reference code...
        ### END SOLUTION

Publishing replaces each solution block with ``raise NotImplementedError(...)`` whose message
names the assignment, the method and the first line of its docstring, and deletes every
``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` block from test files. The files beside
the assignment folders (``__init__.py``, the ``conftest.py`` that every assignment's tests share)
are published the same way. Test files named
``test_*hidden*.py`` are not published at all, and neither is a file with a line that starts
with ``### INSTRUCTOR ONLY`` (a reference students never get, such as a5's SLO policy). The
result is then checked: it parses, contains no marker text, imports, and its public classes and
methods have the solution's signatures.

This is our own small equivalent of nbgrader's ClearSolutions / ClearHiddenTests: nbgrader
works on notebooks and brings the whole Jupyter stack into the instructor's environment,
while these are plain ``.py`` files and a line-based rewrite is all that is needed.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import importlib.util
import inspect
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from . import assignments

ROOT = assignments.ROOT
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
INSTRUCTOR_ONLY = "### INSTRUCTOR ONLY"
MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN, INSTRUCTOR_ONLY)
_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)\s*\(")
_SKIP = {"__pycache__", ".pytest_cache"}


class PublishError(RuntimeError):
    """A solution file cannot be published; the message names the file and line."""


def strip_solutions(source: str, assignment: str, filename: str = "<solution>") -> str:
    """Replace every solution block with a NotImplementedError that says what to write."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    block_start: int | None = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            if block_start is not None:
                raise PublishError(f"{filename}:{number}: {BEGIN_SOLUTION} inside another solution block")
            block_start = number
            indent = line[: len(line) - len(line.lstrip())]
            message = _hint(lines[: number - 1], assignment)
            out.append(f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError({json.dumps(message)})\n")
        elif stripped == END_SOLUTION:
            if block_start is None:
                raise PublishError(f"{filename}:{number}: {END_SOLUTION} without a matching {BEGIN_SOLUTION}")
            block_start = None
        elif block_start is None:
            out.append(line)
    if block_start is not None:
        raise PublishError(f"{filename}:{block_start}: {BEGIN_SOLUTION} is never closed")
    return "".join(out)


def strip_hidden_tests(source: str, filename: str = "<test>") -> str:
    """Delete every hidden-test block."""
    out: list[str] = []
    hidden_from: int | None = None
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        stripped = line.strip()
        if stripped == BEGIN_HIDDEN:
            hidden_from = number
        elif stripped == END_HIDDEN:
            if hidden_from is None:
                raise PublishError(f"{filename}:{number}: {END_HIDDEN} without a matching {BEGIN_HIDDEN}")
            hidden_from = None
        elif hidden_from is None:
            out.append(line)
    if hidden_from is not None:
        raise PublishError(f"{filename}:{hidden_from}: {BEGIN_HIDDEN} is never closed")
    return "".join(out)


def _hint(before: list[str], assignment: str) -> str:
    """'aN: Class.method: <first docstring line>' for the function that encloses a solution block."""
    for index in range(len(before) - 1, -1, -1):
        match = _DEF.match(before[index])
        if not match:
            continue
        name = match.group(2)
        doc = _first_docstring_line(before[index + 1:])
        owner = next((m.group(1) for m in map(re.compile(r"^class\s+(\w+)").match, reversed(before[:index])) if m), "")
        where = f"{owner}.{name}" if owner else name
        what = doc.rstrip(".") if doc else "write this part"
        return f"{assignment}: {where}: {what[0].lower() + what[1:]} (see the {assignment} handout)"
    return f"{assignment}: write this part (see the {assignment} handout)"


def _first_docstring_line(body: list[str]) -> str:
    for line in body:
        text = line.strip()
        if not text:
            continue
        for quote in ('"""', "'''"):
            if text.startswith(quote):
                return text[3:].split(quote)[0].strip()
        return ""
    return ""


def publish_file(source: Path, target: Path, assignment: str) -> None:
    text = source.read_text()
    if source.suffix == ".py":
        rel = str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source)
        text = strip_hidden_tests(strip_solutions(text, assignment, rel), rel)
        try:
            ast.parse(text, filename=str(target))
        except SyntaxError as err:
            raise PublishError(f"{rel}: the published file does not parse: {err.msg} (line {err.lineno})") from err
        leftover = [m for m in MARKERS if m in text]
        if leftover:
            raise PublishError(f"{rel}: marker text {leftover[0]!r} is left after publishing (a misspelt marker?)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def publish_assignment(solution_dir: Path, out_dir: Path) -> None:
    """Write one assignment's published tree into ``out_dir`` and check it against the solution."""
    assignment = solution_dir.name
    for source in sorted(solution_dir.rglob("*")):
        rel = source.relative_to(solution_dir)
        if source.is_dir() or _SKIP & set(rel.parts) or re.fullmatch(r"test_.*hidden.*\.py", source.name):
            continue
        if source.suffix == ".py" and re.search(rf"^{INSTRUCTOR_ONLY}", source.read_text(), re.M):
            continue  # whole files that stay in the instructor tree
        publish_file(source, out_dir / rel, assignment)
    scheduler = out_dir / "scheduler.py"
    if scheduler.is_file():
        check_signatures(solution_dir / "scheduler.py", scheduler)


def check_signatures(solution: Path, skeleton: Path) -> None:
    """The skeleton imports and its public classes and methods match the solution's."""
    solution_api, skeleton_api = _public_api(solution), _public_api(skeleton)
    if solution_api != skeleton_api:
        missing = set(solution_api) ^ set(skeleton_api)
        differing = [k for k in solution_api if k in skeleton_api and solution_api[k] != skeleton_api[k]]
        raise PublishError(f"{skeleton}: public API differs from the solution's: {sorted(missing) or differing}")


def _public_api(path: Path) -> dict[str, str]:
    spec = importlib.util.spec_from_file_location(f"_publish_check_{abs(hash(str(path)))}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise PublishError(f"{path} does not import: {type(err).__name__}: {err}") from err
    api: dict[str, str] = {}
    for class_name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ != module.__name__ or class_name.startswith("_"):
            continue
        api[class_name] = "class"
        for name, member in vars(cls).items():
            if callable(member) and (not name.startswith("_") or name == "__init__"):
                api[f"{class_name}.{name}"] = str(inspect.signature(member))
    return api


def publish_tree(solutions: Path, out_dir: Path, names: list[str] | None = None) -> None:
    """Publish the named assignments (default: every one in ``solutions``) and the files beside them
    (``__init__.py``, the shared ``conftest.py``) into ``out_dir``."""
    for source in sorted(p for p in solutions.iterdir() if p.is_file()):
        publish_file(source, out_dir / source.name, "")
    for name in names if names is not None else assignments.names(solutions.parent, solutions.name):
        publish_assignment(solutions / name, out_dir / name)


def publish(solutions: Path = ROOT / "solutions", published: Path = ROOT / "assignments",
            check: bool = False) -> list[str]:
    """Publish every assignment; with ``check``, only report what would change. Returns changed paths."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        publish_tree(solutions, staged)
        changed = _differences(staged, published)
        if not check:
            for rel in changed:
                source, target = staged / rel, published / rel
                if source.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                elif target.is_file():
                    target.unlink()
    return changed


def _files(base: Path) -> set[Path]:
    return {p.relative_to(base) for p in base.rglob("*") if p.is_file() and not _SKIP & set(p.parts)}


def _differences(staged: Path, published: Path) -> list[str]:
    """Relative paths that differ between the staged tree and ``published`` (for published assignments)."""
    names = {p.name for p in staged.iterdir() if p.is_dir()}
    old = ({rel for rel in _files(published) if rel.parts[0] in names or len(rel.parts) == 1}
           if published.is_dir() else set())
    changed = []
    for rel in sorted(_files(staged) | old):
        a, b = staged / rel, published / rel
        if not (a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)):
            changed.append(str(rel))
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description="Publish student skeletons from solutions/ into assignments/.")
    parser.add_argument("--check", action="store_true", help="only check that assignments/ is up to date")
    args = parser.parse_args()
    try:
        changed = publish(check=args.check)
    except PublishError as err:
        print(f"publish: {err}", file=sys.stderr)
        return 2
    if args.check and changed:
        print("assignments/ is out of date; run `nox -s publish`. Differs: " + ", ".join(changed), file=sys.stderr)
        return 1
    print(("would change: " if args.check else "published: ") + (", ".join(changed) or "nothing changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
