"""The student release: what it holds, what it must never hold, and that its commands work there.

``nox -s release -- DEST`` writes the repository students receive. These tests build one into a
temporary folder and run the students' commands inside it with this interpreter (``.ci/run``
also runs the release's own noxfile there): the public tests run and fail on the skeleton with
the hint, the skeleton serves and fails its requests with a one-line message, the given a0
serves, and a self-grade writes a valid results.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autograder import assignments
from autograder.parts.pytest_part import hidden_tests
from autograder.release import ReleaseError, find_leaks, write_release
from autograder.results import validate_gradescope

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("release") / "course"
    write_release(dest)
    return dest


def run_in(tree: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=tree, env=ENV, capture_output=True, text=True, timeout=timeout)


# ---- what it holds ------------------------------------------------------------------------------

def test_the_release_holds_the_students_tree_and_no_instructor_files(release):
    for rel in ["README.md", "noxfile.py", "pyproject.toml", "mkdocs.yml", "engine_core/scheduler.py",
                "benchmark/bench_serving.py", "autograder/grade.py", "docs/index.md", "assignments/a0/scheduler.py",
                "assignments/conftest.py", *[f"assignments/{n}/scheduler.py" for n in assignments.graded_names()],
                *[f"assignments/{n}/spec.toml" for n in assignments.graded_names()]]:
        assert (release / rel).is_file(), rel
    for rel in ["solutions", "tests", "autograder/publish.py", "autograder/gradescope.py", "autograder/release.py",
                "autograder/student_tree", ".ci"]:
        assert not (release / rel).exists(), rel
    assert (release / "assignments/a0/scheduler.py").read_text() == (ROOT / "solutions/a0/scheduler.py").read_text()


def _solution_lines(path: Path) -> set[str]:
    """Lines of the solution blocks that no file outside solutions/ holds (a0 does some of the same things)."""
    lines, inside = set(), False
    for line in path.read_text().splitlines():
        inside = (inside or line.strip() == "### BEGIN SOLUTION") and line.strip() != "### END SOLUTION"
        if inside and len(line.strip()) >= 20 and not line.strip().startswith("#"):
            lines.add(line.strip())
    for top in ("engine_core", "benchmark", "autograder", "docs", "assignments"):
        for other in (ROOT / top).rglob("*.*"):
            if other.suffix in (".py", ".md", ".toml"):
                lines -= {line.strip() for line in other.read_text(errors="ignore").splitlines()}
    return lines


def test_no_solution_text_and_no_hidden_test_reaches_students(release):
    texts = {p.relative_to(release).as_posix(): p.read_text(errors="ignore") for p in release.rglob("*") if p.is_file()}
    latest = assignments.names(ROOT, "solutions")[-1]
    secret = _solution_lines(ROOT / "solutions" / latest / "scheduler.py")
    assert secret, "the newest solution has solution blocks to look for"
    hidden: set[str] = set()
    for name in assignments.names(ROOT, "solutions"):
        for path, names in hidden_tests(ROOT / "solutions" / name / "tests").items():
            hidden |= names if names is not None else set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    for rel, text in texts.items():
        assert not any(line in text for line in secret), f"{rel} holds solution text"
        assert not any(re.search(rf"\bdef {name}\b", text) for name in hidden), f"{rel} holds a hidden test"
        if rel.startswith("assignments/") and rel.endswith(".py"):
            assert "### BEGIN" not in text and "### END" not in text, rel


def test_the_leak_check_finds_each_kind_of_leak(release, tmp_path):
    """The release refuses to be written when any of these is in it (a check that can fail)."""
    assert find_leaks(release) == []
    tree = tmp_path / "tree"
    shutil.copytree(release / "assignments", tree / "assignments")
    latest = assignments.names(ROOT, "solutions")[-1]
    skeleton = tree / "assignments" / latest / "scheduler.py"
    skeleton.write_text((ROOT / "solutions" / latest / "scheduler.py").read_text())
    (tree / "solutions").mkdir()
    leaks = find_leaks(tree)
    assert any("solutions/" in leak for leak in leaks)
    assert any("marker '### BEGIN SOLUTION'" in leak for leak in leaks)
    assert any(f"solution text of {latest}" in leak for leak in leaks)


def test_a_release_refuses_a_used_folder_and_an_unknown_assignment(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(ReleaseError, match="not empty"):
        write_release(tmp_path / "used")
    with pytest.raises(ReleaseError, match="no such assignment"):
        write_release(tmp_path / "new", upto="a99")
    with pytest.raises(ReleaseError, match="given whole"):
        write_release(tmp_path / "new", upto="a0")


def test_upto_leaves_later_assignments_and_their_handouts_out(tmp_path):
    names = assignments.names(ROOT, "solutions")
    dest = tmp_path / "course"
    assert write_release(dest, upto=names[1]) == names[:2]
    assert sorted(p.name for p in (dest / "assignments").iterdir() if p.is_dir() and p.name != "__pycache__") == names[:2]
    assert sorted(p.stem for p in (dest / "docs" / "assignments").glob("*.md")) == names[:2]
    assert f"`{names[1]}`" in (dest / "README.md").read_text()


# ---- the students' commands, run inside it -----------------------------------------------------

@pytest.mark.slow
def test_public_tests_run_and_fail_on_the_skeleton_with_the_hint(release):
    name = assignments.graded_names()[0]
    done = run_in(release, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"assignments/{name}/tests")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "NotImplementedError" in done.stdout and f"see the {name} handout" in done.stdout
    assert " passed" not in done.stdout.splitlines()[-1]


@pytest.mark.slow
def test_a_self_grade_writes_a_valid_results_json(release):
    name = assignments.graded_names()[0]
    out = release / "grade-results" / name
    done = run_in(release, "-m", "autograder.grade", name, "--parts", "tests", "--quiet")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert validate_gradescope(results) == []
    assert results["score"] == 0 and results["tests"]
    # Only the public tests exist here, and they say what to write.
    assert all(t["visibility"] == "visible" for t in results["tests"])
    assert all(t["name"].startswith(f"assignments/{name}/tests/") for t in results["tests"])
    assert "NotImplementedError" in results["tests"][0]["output"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serve_in_release(release) -> Iterator:
    procs: list[subprocess.Popen[str]] = []

    def start(scheduler: str) -> str:
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine_core", "--scheduler", scheduler, "--model", "random:tiny",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=release, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "the server exited"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("the server did not come up in 180 s")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


CHAT = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8, "temperature": 0}


@pytest.mark.slow
def test_the_skeleton_serves_and_fails_its_requests_with_a_one_line_hint(serve_in_release):
    name = assignments.graded_names()[0]
    url = serve_in_release(name)
    reply = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=60)
    assert reply.status_code == 500
    message = reply.json()["error"]["message"]
    assert "\n" not in message and f"assignments/{name}/scheduler.py" in message
    assert "is not implemented yet" in message and f"see the {name} handout" in message
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # the server keeps running


@pytest.mark.slow
def test_the_given_a0_serves(serve_in_release):
    url = serve_in_release("a0")
    reply = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_the_course_site_builds_in_the_release(release, tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=release, env={**ENV, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    handouts = sorted(p.stem for p in (tmp_path / "site" / "assignments").glob("*.html"))
    assert handouts == sorted(p.name for p in (release / "assignments").iterdir() if p.is_dir() and p.name[0] == "a")
