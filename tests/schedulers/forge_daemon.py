"""The a1 reference scheduler, except that it leaves a daemon behind to forge results.json later.

Overwriting results.json while the part runs is useless (the grader writes it last), so this
one waits: when it is created it double-forks a daemon in a session of its own (out of the
part's process group, which the grader kills) that outlives the part and the grader, and
overwrites ``<--out>/results.json`` with a perfect grade as soon as the grader has written the
honest one. The grader must kill it before writing (it becomes the daemon's subreaper).
Then ``schedule()`` raises, so that the honest grade is low.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from engine_core.scheduler import ScheduledSeq, SchedulerContext
from solutions.a1.scheduler import ContinuousBatchingScheduler

from .forge_results import FORGED, guessed_out_dirs

DAEMON_MARKER = "daemon-started.txt"
LIFETIME_S = 60.0


def _forge_later(out_dirs: list[Path]) -> None:
    """In the daemon: wait for each honest results.json and replace it, for LIFETIME_S at most."""
    deadline = time.monotonic() + LIFETIME_S
    while time.monotonic() < deadline:
        for directory in out_dirs:
            target = directory / "results.json"
            try:
                if target.is_file() and "forged" not in target.read_text():
                    target.write_text(json.dumps(FORGED))
            except OSError:
                pass
        time.sleep(0.05)


class ForgeDaemonScheduler(ContinuousBatchingScheduler):
    started = False  # one daemon per process is plenty

    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        if type(self).started:
            return
        type(self).started = True
        out_dirs = [d for d in guessed_out_dirs() if d != Path.cwd()]
        if os.fork() == 0:  # child: a new session, then the daemon, then go
            try:
                os.setsid()
                if os.fork() == 0:
                    for directory in out_dirs:
                        (directory / DAEMON_MARKER).write_text(f"{os.getpid()}\n")
                    _forge_later(out_dirs)
            finally:
                os._exit(0)
        os.wait()  # the child exits at once; the daemon is an orphan now

    def schedule(self) -> list[ScheduledSeq]:
        raise RuntimeError("deliberately broken after starting the forging daemon")
