"""Fixtures for every assignment's tests: the scheduler under test, found from the test's folder.

A test in ``assignments/aN/tests`` gets aN's scheduler: your ``assignments/aN/scheduler.py``,
or the reference solution with ``ENGINE_CORE_IMPL=solution`` (instructors use this; the
grader sets it). An assignment's own ``tests/conftest.py`` adds what only it needs.
"""

from __future__ import annotations

import os

import pytest

from engine_core.scheduler import Scheduler
from engine_core.scheduler_loader import ASSIGNMENT, load_scheduler


@pytest.fixture
def assignment(request: pytest.FixtureRequest) -> str:
    """The assignment whose tests are running: the innermost ``aN`` folder of the test file."""
    folders = [part for part in request.path.parts if ASSIGNMENT.fullmatch(part)]
    if not folders:
        raise RuntimeError(f"{request.path} is not inside an assignment folder (aN/)")
    return folders[-1]


@pytest.fixture
def scheduler_cls(assignment: str) -> type[Scheduler]:
    return load_scheduler(assignment, os.environ.get("ENGINE_CORE_IMPL", "student"))
