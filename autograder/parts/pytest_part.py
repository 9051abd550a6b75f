"""The ``tests`` part: the assignment's pytest suite against the graded scheduler.

Which tests: the instructor tree (``solutions/<aN>/tests``: the public tests plus the
``### BEGIN HIDDEN TESTS`` blocks and ``test_*hidden*.py`` files that publishing strips) when
it exists, else the published ``assignments/<aN>/tests``. Either way the tests load the graded
scheduler through their ``scheduler_cls`` fixture, which reads ``ENGINE_CORE_IMPL``; for
``--scheduler-module`` the loader is pointed at that module in this process before pytest
imports the conftest (the tests part runs in its own process, so this touches nothing else).

How: ``pytest.main`` in this process, with pytest-timeout (``--timeout-method=signal``: a test
stuck in a Python loop is interrupted and fails, and the other tests still run) and a JUnit
XML report in a private temporary directory, in the ``xunit1`` flavour because it names each
test case's file. Each test case becomes one entry; the part's points are split evenly
across them; a test defined in a hidden block (or file) gets visibility ``after_published``.
A skipped test earns nothing (a scheduler could call ``pytest.skip`` to dodge a test). A
collection error, or no test at all, is one zero entry for the whole part that says so.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .. import assignments
from ..results import Entry, PartResult, make_entry, split_points
from ..spec import ROOT, TestsSpec
from .common import PartContext, relative

BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
HIDDEN_FILE = re.compile(r"test_.*hidden.*\.py")
_DEFINITION = re.compile(r"^\s*(?:async\s+def|def|class)\s+(\w+)")
_EXIT_MEANINGS = {2: "interrupted (collection errors?)", 3: "pytest hit an internal error",
                  4: "pytest was used wrongly", 5: "no tests were collected"}


@dataclass(frozen=True)
class CaseResult:
    test_id: str
    file: Path
    passed: bool
    output: str


def run(ctx: PartContext) -> PartResult:
    spec = ctx.part_spec
    assert isinstance(spec, TestsSpec)
    test_dir = choose_test_dir(ctx)
    if test_dir is None:
        where = " or ".join(relative(d) for d in candidate_test_dirs(ctx))
        return _zero(ctx, f"no test directory found (looked for {where})")
    os.environ["ENGINE_CORE_IMPL"] = ctx.impl
    if ctx.scheduler_module:
        _point_loader_at(ctx.spec.assignment, ctx.scheduler_module)
    with tempfile.TemporaryDirectory(prefix="grade-junit-") as tmp:
        junit = Path(tmp) / "junit.xml"
        code = _pytest(test_dir, junit, spec.per_test_timeout_s)
        cases, collection_errors = read_junit(junit) if junit.is_file() else ([], [])
    if collection_errors:
        return _zero(ctx, "the tests could not be collected, so none ran:\n\n" + "\n\n".join(collection_errors))
    if not cases:
        meaning = _EXIT_MEANINGS.get(code, f"exit status {code}")
        return _zero(ctx, f"no test ran in {relative(test_dir)} (pytest: {meaning}); see the log for details")
    hidden = hidden_tests(test_dir)
    shares = split_points(spec.points, len(cases))
    entries: list[Entry] = []
    for case, share in zip(cases, shares):
        visibility = "after_published" if is_hidden(case, hidden) else "visible"
        entries.append(make_entry(case.test_id, 1.0 if case.passed else 0.0, share, case.output,
                                  visibility, part="tests"))
    passed = sum(c.passed for c in cases)
    summary = f"{passed}/{len(cases)} tests passed"
    failed = [c for c in cases if not c.passed]
    if failed:
        first_line = (failed[0].output.splitlines() or ["failed"])[0]
        summary += f"; first failure: {failed[0].test_id.rsplit('::', 1)[-1]}: {first_line}"[:200]
    return PartResult("tests", entries, summary, {"passed": passed, "total": len(cases),
                                                  "test_dir": relative(test_dir)})


def choose_test_dir(ctx: PartContext) -> Path | None:
    """The instructor tree when it exists, else the public one; None when neither does."""
    spec = ctx.part_spec
    assert isinstance(spec, TestsSpec)
    for path in candidate_test_dirs(ctx):
        if path.is_dir():
            return path
    return None


def candidate_test_dirs(ctx: PartContext) -> list[Path]:
    """The spec's directories, or by default the assignment's own: instructor tree first."""
    spec = ctx.part_spec
    assert isinstance(spec, TestsSpec)
    name, root = ctx.spec.assignment, ctx.spec.resolve_path(".")
    instructor = ctx.spec.resolve_path(spec.instructor_dir) if spec.instructor_dir else None
    public = ctx.spec.resolve_path(spec.public_dir) if spec.public_dir else None
    if not (instructor or public):
        instructor, public = assignments.instructor_tests(name, root), assignments.public_tests(name, root)
    return [path for path in (instructor, public) if path is not None]


def _zero(ctx: PartContext, message: str) -> PartResult:
    entry = make_entry("tests: collection", 0.0, ctx.part_spec.points, message, part="tests")
    return PartResult("tests", [entry], message.splitlines()[0])


def _point_loader_at(assignment: str, module: str) -> None:
    """Make ``load_scheduler(assignment, ...)`` return ``module``'s scheduler, for this process only."""
    from engine_core import scheduler_loader

    original = scheduler_loader.load_scheduler

    def load_scheduler(scheduler: str, impl: str = "student"):
        return original(module) if scheduler == assignment else original(scheduler, impl)

    scheduler_loader.load_scheduler = load_scheduler


def _pytest(test_dir: Path, junit: Path, per_test_timeout_s: float) -> int:
    import pytest

    args = [
        str(test_dir), f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider",
        f"--timeout={per_test_timeout_s:g}", "--timeout-method=signal", f"--junitxml={junit}",
        "-o", "junit_family=xunit1", "-o", "junit_logging=no", "-q", "-rfE",
    ]
    return int(pytest.main(args))


def read_junit(path: Path) -> tuple[list[CaseResult], list[str]]:
    """The test cases of a pytest JUnit report (merged by test id, in order) and any collection errors."""
    root = ET.parse(path).getroot()
    merged: dict[str, CaseResult] = {}
    collection_errors: list[str] = []
    for case in root.iter("testcase"):
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        if any(p.tag == "error" and p.get("message", "") == "collection failure" for p in problems):
            collection_errors.append(f"{case.get('name', '?')}:\n{_tail(problems[0].text or '', 3000)}")
            continue
        file = case.get("file", "")
        test_id = _test_id(file, case.get("classname", ""), case.get("name", "?"))
        output = "\n\n".join(_describe(p) for p in problems)
        previous = merged.get(test_id)
        if previous is not None:  # e.g. a teardown error reported after the call passed
            output = "\n\n".join(o for o in (previous.output, output) if o)
            merged[test_id] = CaseResult(test_id, previous.file, previous.passed and not problems, output)
        else:
            merged[test_id] = CaseResult(test_id, (ROOT / file).resolve(), not problems, output)
    return list(merged.values()), collection_errors


def _test_id(file: str, classname: str, name: str) -> str:
    """``path/to/test_x.py::[Class::]test_name[params]``, pytest's node id."""
    module = file.removesuffix(".py").replace("/", ".").replace("\\", ".").lstrip(".")
    cls = classname.rsplit(".", 1)[-1] if classname and not classname.endswith(module) else ""
    return "::".join(part for part in (file, cls, name) if part)


def _describe(problem: ET.Element) -> str:
    message = (problem.get("message") or "").strip()
    if problem.tag == "skipped":
        return f"skipped ({message or 'no reason given'}): a skipped test earns no points"
    kind = "error in setup or teardown" if problem.tag == "error" else "failed"
    return f"{kind}: {message[:500]}\n\n{_tail(problem.text or '', 3000)}".strip()


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def hidden_tests(test_dir: Path) -> dict[Path, set[str] | None]:
    """Per test file, the names defined in hidden blocks; None for a file that is hidden as a whole."""
    hidden: dict[Path, set[str] | None] = {}
    for path in sorted(test_dir.rglob("*.py")):
        if HIDDEN_FILE.fullmatch(path.name):
            hidden[path.resolve()] = None
            continue
        names: set[str] = set()
        inside = False
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stripped = line.strip()
            if stripped == BEGIN_HIDDEN:
                inside = True
            elif stripped == END_HIDDEN:
                inside = False
            elif inside and (match := _DEFINITION.match(line)):
                names.add(match.group(1))
        if names:
            hidden[path.resolve()] = names
    return hidden


def is_hidden(case: CaseResult, hidden: dict[Path, set[str] | None]) -> bool:
    """Whether a test case comes from a hidden block (by its function or class name) or a hidden file."""
    if case.file not in hidden:
        return False
    names = hidden[case.file]
    if names is None:
        return True
    parts = case.test_id.split("::")[1:]
    return any(part.split("[", 1)[0] in names for part in parts)
