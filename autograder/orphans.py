"""Processes a part leaves behind outside its process group: catch them and kill them (Linux).

The runner kills a part's whole process group when the part ends, but a student's code can
leave that group: fork, ``setsid()`` in the child, fork again, and the grandchild is a daemon
in a session of its own that outlives the part and the grader. Such a daemon could wait for
the grader to write ``results.json`` and then overwrite it (``tests/schedulers/forge_daemon.py``
does exactly that), so killing the process group is not enough to keep the grade honest.

Linux has the tool for this: a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``). Orphaned
descendants are re-parented to the nearest subreaper ancestor instead of to init, whatever
sessions or groups they moved to. The grader makes itself one (:func:`become_subreaper`, once,
in ``grade.main``); after each part, every child of the grader that was not there before the
part started can only be something the part left behind, and :func:`kill_new_children` kills
and reaps it, round after round, until none is left (killing a daemon's parent re-parents the
daemon's own children to the grader too). Where ``prctl`` is not available (macOS, say: a
student grading on a laptop), nothing happens and the process group kill is all there is.

State: the subreaper flag is the grader process's own, set by the command line's ``main``;
these functions keep none.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
MAX_ROUNDS = 50


def become_subreaper() -> bool:
    """Make this process its descendants' subreaper; False where the platform has no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def children(pid: int | None = None) -> set[int]:
    """The process ids whose parent is ``pid`` (default: this process), from /proc; empty without /proc."""
    pid = os.getpid() if pid is None else pid
    found: set[int] = set()
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.add(int(entry.name))
    return found


def kill_new_children(before: set[int]) -> int:
    """Kill and reap every child of this process not in ``before``; returns how many were killed."""
    killed: set[int] = set()
    for _ in range(MAX_ROUNDS):
        new = children() - before
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in new:
            try:
                os.waitpid(pid, 0)  # reap it, so it neither lingers as a zombie nor counts again
            except ChildProcessError:
                pass
    return len(killed)
