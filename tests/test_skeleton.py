"""Student skeletons: they import, their hooks say what to do, and their public API is the solution's."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import assignments
from autograder.publish import BEGIN_SOLUTION
from engine_core.block_allocator import BlockAllocator
from engine_core.sampling_params import SamplingParams
from engine_core.scheduler import SchedulerContext, Sequence
from engine_core.scheduler_loader import load_scheduler

ROOT = Path(__file__).resolve().parent.parent
# Every assignment with something to write (a0 is given whole).
SKELETONS = [name for name in assignments.names(ROOT, "solutions")
             if BEGIN_SOLUTION in (ROOT / "solutions" / name / "scheduler.py").read_text()]


def public_api(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and (not name.startswith("_") or name == "__init__")
    }


@pytest.mark.parametrize("assignment", SKELETONS)
def test_skeleton_has_the_solutions_public_signatures(assignment):
    student, solution = load_scheduler(assignment, "student"), load_scheduler(assignment, "solution")
    assert student.__name__ == solution.__name__
    assert public_api(student) == public_api(solution)


@pytest.mark.parametrize("assignment", SKELETONS)
def test_a_skeleton_says_what_to_write_as_soon_as_a_request_reaches_it(assignment):
    """A later skeleton starts from the earlier reference, so only what is new raises; a request
    that is added and scheduled reaches it."""
    ctx = SchedulerContext(BlockAllocator(8), block_size=4, max_num_seqs=2, max_num_batched_tokens=32, max_model_len=32)
    scheduler = load_scheduler(assignment, "student")(ctx)
    seq = Sequence("s", [1, 2, 3], SamplingParams(), seed=0)
    with pytest.raises(NotImplementedError, match=f"{assignment}: .+handout"):
        scheduler.add(seq)
        scheduler.schedule()


def run_public_tests(assignment: str, impl: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENGINE_CORE_IMPL": impl}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"assignments/{assignment}/tests"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("assignment", SKELETONS)
def test_public_tests_pass_on_the_solution_and_fail_on_the_skeleton(assignment):
    solution = run_public_tests(assignment, "solution")
    assert solution.returncode == 0, solution.stdout[-2000:]
    skeleton = run_public_tests(assignment, "student")
    assert skeleton.returncode == 1, skeleton.stdout[-2000:]
    assert " passed" not in skeleton.stdout.splitlines()[-1]
