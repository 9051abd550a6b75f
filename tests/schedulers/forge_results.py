"""The a1 reference scheduler, except that it tries to forge a perfect grade and then breaks.

When it is created it writes a results.json claiming 1000 points into its working directory and
into every output directory it can guess: the default ``grade-results/a1`` is *not* tried (the
tests must not touch the repository), but the ``--out`` of the grading command is, read from
the parent process's command line in /proc (what a determined student would do). Then its
``schedule()`` raises, so that the honest grade is low. The grader must overwrite the forgery.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine_core.scheduler import ScheduledSeq, SchedulerContext
from solutions.a1.scheduler import ContinuousBatchingScheduler

MARKER = "forged-by-scheduler.txt"
FORGED = {"score": 1000.0, "execution_time": 1, "output": "forged",
          "tests": [{"name": "forged", "score": 1000.0, "max_score": 1000.0, "status": "passed", "output": "",
                     "visibility": "visible"}]}


def guessed_out_dirs() -> list[Path]:
    dirs = [Path.cwd()]
    pid = os.getppid()
    for _ in range(3):  # the part's parent is the grader; walk up a little in case of wrappers
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        args = [a.decode(errors="replace") for a in argv]
        if "--out" in args and args.index("--out") + 1 < len(args):
            dirs.append(Path(args[args.index("--out") + 1]))
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return dirs


class ForgeResultsScheduler(ContinuousBatchingScheduler):
    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        for directory in guessed_out_dirs():
            try:
                (directory / "results.json").write_text(json.dumps(FORGED))
                (directory / MARKER).write_text("the scheduler wrote here\n")  # proof that it got there
            except OSError:
                pass

    def schedule(self) -> list[ScheduledSeq]:
        raise RuntimeError("deliberately broken after forging results.json")
