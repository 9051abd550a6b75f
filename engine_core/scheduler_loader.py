"""Find the scheduler class to run from ``--scheduler`` and ``--impl``.

    --scheduler a1                    assignments.a1.scheduler   (your work)
    --scheduler a1 --impl solution    solutions.a1.scheduler     (the reference, instructors)
    --scheduler my_pkg.my_module      any module on the Python path

The module must define exactly one subclass of :class:`~engine_core.scheduler.Scheduler`.
"""

from __future__ import annotations

import importlib
import inspect
import re

from .scheduler import Scheduler

ASSIGNMENT = re.compile(r"a\d+")


class SchedulerLoadError(RuntimeError):
    """The scheduler could not be loaded; the message is one line that says why."""


def module_name(scheduler: str, impl: str = "student") -> str:
    if ASSIGNMENT.fullmatch(scheduler):
        package = {"student": "assignments", "solution": "solutions"}.get(impl)
        if package is None:
            raise SchedulerLoadError(f"--impl must be 'student' or 'solution', not {impl!r}")
        return f"{package}.{scheduler}.scheduler"
    return scheduler


def load_scheduler(scheduler: str, impl: str = "student") -> type[Scheduler]:
    """The scheduler class that ``--scheduler``/``--impl`` name."""
    name = module_name(scheduler, impl)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise SchedulerLoadError(f"no scheduler module {name} (file {name.replace('.', '/')}.py)") from err
        raise SchedulerLoadError(f"{name.replace('.', '/')}.py imports {err.name!r}, which is not installed") from err
    except SyntaxError as err:
        raise SchedulerLoadError(f"{err.filename}:{err.lineno}: syntax error: {err.msg}") from err
    classes = [
        cls for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Scheduler) and cls.__module__ == module.__name__ and not inspect.isabstract(cls)
    ]
    path = getattr(module, "__file__", name)
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "none"
        raise SchedulerLoadError(
            f"{path} must define exactly one concrete subclass of engine_core.scheduler.Scheduler (found: {found})"
        )
    return classes[0]
