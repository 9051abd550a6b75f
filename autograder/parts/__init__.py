"""The graded parts. Each runs in its own process: ``python -m autograder.parts <part> ...``.

* ``tests`` (:mod:`.pytest_part`): the assignment's unit tests, one entry per test case.
* ``correctness`` (:mod:`.correctness`): concurrent greedy requests through the loop must equal
  each request run alone.
* ``accuracy`` (:mod:`.accuracy`): MMLU / GSM8K accuracy through the HTTP server, within a
  tolerance of the reference scheduler's, measured in the same process.
* ``performance`` (:mod:`.performance`): serving throughput over the baseline scheduler's.
* ``slo`` (:mod:`.slo`): extra credit, for a scheduler that sets ``slo_aware = True``: SLO
  attainment over the baseline scheduler's.

Every part is a function ``run(ctx: PartContext) -> PartResult`` (see :mod:`.common`); the
command line in ``__main__`` loads the spec, calls it, and writes the result JSON. The part
modules are imported lazily so that a part pays only for what it uses (``tests`` does not load
the model, for instance).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..results import PartResult
from .common import PartContext

PART_MODULES = {
    "tests": "autograder.parts.pytest_part",
    "correctness": "autograder.parts.correctness",
    "accuracy": "autograder.parts.accuracy",
    "performance": "autograder.parts.performance",
    "slo": "autograder.parts.slo",
}


def part_runner(part: str) -> Callable[[PartContext], PartResult]:
    """The ``run`` function of a part, by name."""
    module = importlib.import_module(PART_MODULES[part])
    return module.run
