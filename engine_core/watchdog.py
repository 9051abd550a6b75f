"""Noticing a scheduler hook that does not return.

A scheduler hook should take microseconds. One that loops forever (a ``while`` that never
advances) stops the engine loop thread, and with it every request, silently: clients just wait.
The watchdog is a second thread that looks at the hook in progress once in a while:

    loop thread    with watchdog.watch("schedule"): scheduler.schedule()   ...spins...
    watchdog       t=0.5 s ok   t=1 s ok   ...   t=limit: where is the loop thread?
                   -> "schedule() has not returned for 10 s; it is at assignments/a1/scheduler.py:42
                       in schedule" -> on_stuck(message): fail the waiting requests, /health says so

If the hook returns after all, ``watch`` raises :class:`SchedulerStuckError` as it exits, so the
loop restarts the scheduler as it does after any scheduler failure.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .invariants import SchedulerInvariantError, user_frame


class SchedulerStuckError(SchedulerInvariantError):
    """A hook ran past the watchdog's limit (raised once it returns: hooks must return promptly)."""


class HookWatchdog:
    """Reports, through ``on_stuck``, a hook running longer than ``limit_s`` seconds."""

    def __init__(self, limit_s: float, on_stuck: Callable[[str], None]) -> None:
        self.limit_s = limit_s
        self.on_stuck = on_stuck
        self.stuck_message: str | None = None  # set while a hook is past its limit
        self._hook: tuple[str, float, int] | None = None  # name, start, thread id
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scheduler-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    @contextmanager
    def watch(self, hook: str) -> Iterator[None]:
        """Around one call of the scheduler's ``hook``, on the thread that makes it."""
        started = time.monotonic()
        self._hook = (hook, started, threading.get_ident())
        try:
            yield
        finally:
            self._hook = None
        message, self.stuck_message = self.stuck_message, None
        if message is not None:
            raise SchedulerStuckError(f"{message}; it returned after {time.monotonic() - started:.0f} s")

    def _run(self) -> None:
        while not self._stopping.wait(min(0.5, self.limit_s / 4)):
            hook = self._hook
            if hook is None or self.stuck_message is not None:
                continue
            name, started, thread_id = hook
            elapsed = time.monotonic() - started
            if elapsed >= self.limit_s:
                self.stuck_message = f"{name}() has not returned for {elapsed:.0f} s{self._where(thread_id)}"
                self.on_stuck(self.stuck_message)

    @staticmethod
    def _where(thread_id: int) -> str:
        frame = sys._current_frames().get(thread_id)
        if frame is None:
            return ""
        found = user_frame(traceback.extract_stack(frame))
        return f"; it is at {found}" if found else ""
