"""What the parts share: which schedulers to grade and compare with, the engine, a server.

Schedulers. The *student* scheduler is ``assignments/<aN>`` (``--impl student``), the
reference solution (``--impl solution``) or any module (``--scheduler-module``, for
instructors and the grader's own tests). The *baseline* (performance) and the *reference*
(accuracy) come from the instructor tree ``solutions/`` when it is there, so that a submission
cannot slow its own baseline down; on a student's machine without ``solutions/``, the baseline
comes from the published ``assignments/`` and the reference falls back to the baseline (a
correct scheduler gives the same greedy outputs as any other, so the accuracy comparison
still holds).

Loading a student's module runs the student's code: anything it raises (not only
:class:`SchedulerLoadError`) becomes a :class:`SchedulerUnavailable` whose message says where.

Serving. :func:`serving` starts an :class:`EngineLoop` and a :class:`BackgroundServer` over one
engine, and on the way out stops both and checks that the scheduler gave every KV block back
(:func:`leaked_references`: what a prefix cache keeps and reports in ``held_blocks()`` is not
leaked); then the pool is reset whatever the scheduler held, because an engine is driven by one
loop at a time and the next scheduler on it must start from an empty pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..spec import ROOT, EngineSpec, GradingSpec, PartSpec

if TYPE_CHECKING:
    from engine_core import Engine
    from engine_core.loop import EngineLoop
    from engine_core.scheduler import Scheduler

IDLE_WAIT_S = 10.0


@dataclass(frozen=True)
class PartContext:
    """Everything a part's ``run`` gets: the spec, which part, what to grade, and when it started."""

    spec: GradingSpec
    part: str
    impl: str = "student"
    scheduler_module: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def part_spec(self) -> PartSpec:
        return self.spec.parts[self.part]

    def seconds_left(self, margin: float = 0.0) -> float:
        """Time left before the parent kills this process, less ``margin``."""
        return self.part_spec.time_limit_s - (time.monotonic() - self.started) - margin

    @property
    def graded_label(self) -> str:
        """How reports name the scheduler under test."""
        if self.scheduler_module:
            return self.scheduler_module
        return "your scheduler" if self.impl == "student" else "the reference solution"


class SchedulerUnavailable(RuntimeError):
    """A scheduler could not be loaded; the message is one line that says why."""


def _load(name: str, impl: str) -> type[Scheduler]:
    from engine_core.invariants import describe_error
    from engine_core.scheduler_loader import SchedulerLoadError, load_scheduler

    try:
        return load_scheduler(name, impl)
    except SchedulerLoadError as err:
        raise SchedulerUnavailable(str(err)) from err
    except Exception as err:  # the module raised while it was imported
        raise SchedulerUnavailable(f"importing the scheduler failed: {describe_error(err)}") from err


def graded_scheduler(ctx: PartContext) -> type[Scheduler]:
    """The scheduler under test; :class:`SchedulerUnavailable` if it cannot be loaded."""
    if ctx.scheduler_module:
        return _load(ctx.scheduler_module, "student")
    return _load(ctx.spec.assignment, ctx.impl)


def _trusted(name: str) -> tuple[type[Scheduler], str]:
    """A scheduler the submission cannot have touched, and where it came from.

    The instructor tree's ``solutions/<name>``; in a student release, ``references/<name>``
    (the reference of an assignment whose deadline has passed, shipped with later ones); else
    the published ``assignments/<name>`` (the given a0).
    """
    if (ROOT / "solutions" / name / "scheduler.py").is_file():
        return _load(name, "solution"), "solution"
    if (ROOT / "references" / name / "scheduler.py").is_file():
        return _load(f"references.{name}.scheduler", "student"), "reference"
    return _load(name, "student"), "published"


def baseline_scheduler(spec: GradingSpec) -> tuple[type[Scheduler], str]:
    """The baseline scheduler and its label (``solutions/a0`` when present)."""
    cls, _ = _trusted(spec.baseline)
    return cls, f"{spec.baseline} baseline"


def reference_scheduler(spec: GradingSpec) -> tuple[type[Scheduler], str]:
    """The reference scheduler and its label; the baseline when the solution is not available."""
    cls, source = _trusted(spec.reference)
    if source != "published":
        return cls, f"{spec.reference} reference solution"
    cls, label = baseline_scheduler(spec)
    return cls, f"{label} (the reference solution is not available here)"


def make_engine(engine_spec: EngineSpec, ttft_slo_ms: float = 0.0, tpot_slo_ms: float = 0.0) -> Engine:
    """A fresh engine for this part's process (0 in the spec: the engine's own default; for a target, none)."""
    from engine_core import Engine, EngineConfig

    return Engine(EngineConfig(
        model=engine_spec.model, device=engine_spec.device, dtype=engine_spec.dtype, block_size=engine_spec.block_size,
        num_kv_blocks=engine_spec.num_kv_blocks or None, max_model_len=engine_spec.max_model_len or None,
        ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms,
    ))


def make_loop(engine: Engine, scheduler_cls: type[Scheduler], engine_spec: EngineSpec) -> EngineLoop:
    """An engine loop with invariant checks on (as in the tests); raises whatever the scheduler's ``__init__`` does."""
    from engine_core.loop import EngineLoop

    return EngineLoop(engine, scheduler_cls, max_num_seqs=engine_spec.max_num_seqs,
                      max_num_batched_tokens=engine_spec.max_num_batched_tokens,
                      chunked_prefill_size=engine_spec.chunked_prefill_size, check_invariants=True)


class LoopErrors(logging.Handler):
    """Collects what the engine loop logs at ERROR: each time a scheduler hook raised or broke an invariant."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:  # called under the handler's own lock
        self.messages.append(record.getMessage())

    @contextmanager
    def attached(self) -> Iterator[LoopErrors]:
        logger = logging.getLogger("engine_core.loop")
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)


def leaked_references(loop: EngineLoop) -> int:
    """KV block references the allocator still counts beyond those the scheduler reports holding.

    Call it once every request has finished: no block is then in a live block table, and only
    what the scheduler keeps on purpose (a prefix cache, reported by ``held_blocks()``) may
    remain. A ``held_blocks()`` that raises accounts for nothing.
    """
    try:
        held = len(loop.scheduler.held_blocks())
    except Exception:  # the student's code: its failure is the leak's explanation, not the grader's crash
        held = 0
    return max(loop.ctx.allocator.total_refs - held, 0)


@dataclass
class Served:
    """A running server: its URL, its loop, and (after it stops) the KV block references it leaked."""

    base_url: str
    loop: EngineLoop
    leaked_blocks: int = 0


@contextmanager
def serving(engine: Engine, scheduler_cls: type[Scheduler], engine_spec: EngineSpec) -> Iterator[Served]:
    """Serve ``scheduler_cls`` over ``engine``; on exit stop everything and leave the KV pool empty."""
    from engine_core.server import BackgroundServer, create_app

    loop = make_loop(engine, scheduler_cls, engine_spec)
    loop.start()
    served = Served("", loop)
    try:
        with BackgroundServer(create_app(loop, engine_spec.model)) as server:
            served.base_url = server.base_url
            yield served
            wait_idle(loop)
    finally:
        loop.stop()
        served.leaked_blocks = leaked_references(loop)
        engine.allocator.reset()  # what the scheduler held too: the next scheduler starts from an empty pool


def wait_idle(loop: EngineLoop, timeout: float = IDLE_WAIT_S) -> bool:
    """Wait until the loop has no request left (aborted ones take a step to go)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = loop.stats()
        if stats.num_running + stats.num_waiting == 0:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def relative(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
