"""Adding an assignment touches its folder and its handout, and nothing else.

A copy of the project gains ``solutions/a9`` (a1's scheduler, tests and spec under a new name)
and ``docs/assignments/a9.md``; with no other edit, a9 shows up in the docs build, publishing,
the grader, the student release and the Gradescope bundle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("engine_core", "benchmark", "autograder", "solutions", "assignments", "docs", "mkdocs.yml", "pyproject.toml",
          "noxfile.py", "README.md")
IGNORED = shutil.ignore_patterns("__pycache__", ".pytest_cache", "grade-results")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with a throwaway a9 added (its folder and its handout only)."""
    root = tmp_path_factory.mktemp("project") / "course"
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=IGNORED)
        else:
            root.mkdir(exist_ok=True)
            shutil.copyfile(source, root / name)
    shutil.copytree(ROOT / "solutions" / "a1", root / "solutions" / "a9", ignore=IGNORED)
    # The same policy in other words: a9's solution text must not be a1's, which ships with a9.
    scheduler = root / "solutions" / "a9" / "scheduler.py"
    scheduler.write_text(re.sub(r"\bseq\b", "sequence", scheduler.read_text()))
    spec = root / "solutions" / "a9" / "spec.toml"
    spec.write_text(spec.read_text().replace('assignment = "a1"', 'assignment = "a9"'))
    (root / "docs" / "assignments" / "a9.md").write_text("# a9: a throwaway assignment\n\nNothing to see.\n")
    return root


def run_in(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_publishing_writes_its_skeleton(project):
    run_in(project, "-m", "autograder.publish")
    skeleton = (project / "assignments" / "a9" / "scheduler.py").read_text()
    assert 'raise NotImplementedError("a9: ' in skeleton
    assert (project / "assignments" / "a9" / "spec.toml").is_file()
    run_in(project, "-m", "autograder.publish", "--check")


def test_the_docs_build_lists_its_handout(project, tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    run_in(project, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert (tmp_path / "site" / "assignments" / "a9.html").is_file()
    assert "a9: a throwaway assignment" in (tmp_path / "site" / "index.html").read_text()


def test_the_grader_grades_it(project):
    out = project / "grade-results" / "a9"
    run_in(project, "-m", "autograder.grade", "a9", "--impl", "solution", "--parts", "tests", "--quiet")
    results = json.loads((out / "results.json").read_text())
    assert results["tests"] and results["score"] == pytest.approx(40)
    assert all(t["name"].startswith("solutions/a9/tests/") for t in results["tests"])


def test_the_release_and_the_gradescope_bundle_carry_it(project, tmp_path):
    test_publishing_writes_its_skeleton(project)
    run_in(project, "-m", "autograder.release", str(tmp_path / "release"))
    assert (tmp_path / "release" / "assignments" / "a9" / "scheduler.py").is_file()
    assert "`a9`" in (tmp_path / "release" / "README.md").read_text()
    # Released before a9, a1's reference ships whole, and the grader takes baselines from it.
    reference = (tmp_path / "release" / "references" / "a1" / "scheduler.py").read_text()
    assert "### BEGIN SOLUTION" not in reference and "self.waiting.append(seq)" in reference
    found = run_in(tmp_path / "release", "-c", "from autograder.parts.common import _trusted; print(_trusted('a1')[1])")
    assert found.stdout.strip() == "reference"
    run_in(project, "-m", "autograder.gradescope", "a9", "--out", str(tmp_path / "dist"))
    names = zipfile.ZipFile(tmp_path / "dist" / "a9-gradescope.zip").namelist()
    assert "solutions/a9/spec.toml" in names and "assignments/a9/scheduler.py" in names
