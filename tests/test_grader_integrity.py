"""A submission that rewrites the grader's own files on disk gets no grade from them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_grader import write_spec

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("autograder", "engine_core", "solutions", "assignments", "tests", "benchmark", "pyproject.toml")


@pytest.mark.slow
def test_a_part_that_rewrites_the_grader_scores_zero_and_the_file_is_put_back(tmp_path: Path) -> None:
    tree = tmp_path / "repo"  # never the repository itself: the submission really writes
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, tree / name)
    gates = tree / "autograder" / "parts" / "gates.py"
    original = gates.read_bytes()
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "autograder.grade", "a1", "--spec", str(write_spec(tmp_path, correctness_limit=60)),
         "--out", str(out), "--parts", "correctness,performance",
         "--scheduler-module", "tests.schedulers.tamper_grader"],
        cwd=tree, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["score"] == 0
    [correctness] = [t for t in results["tests"] if t["name"].startswith("correctness")]
    assert "changed the grader's own files" in correctness["output"]
    assert "autograder/parts/gates.py" in correctness["output"]
    [performance] = [t for t in results["tests"] if t["name"].startswith("performance")]
    assert "not graded" in performance["name"] and "changed the grader's files" in performance["output"]
    assert gates.read_bytes() == original
