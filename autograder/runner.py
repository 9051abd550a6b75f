"""Run one part in its own process, under its time limit, and turn whatever happens into entries.

Each part is ``python -m autograder.parts <part> --spec S --impl I --result R`` in a new
session (its own process group), with a private temporary directory as its working directory
and ``R`` inside it. Isolation buys three things:

* a scheduler that hangs, crashes the interpreter or leaks memory costs only its part: on the
  time limit the whole process group is killed (SIGKILL: a busy loop ignores nothing else),
  and every other part still runs;
* the part is never told where the grade is written: it gets only its private result path,
  only the parent writes ``results.json`` (last, see ``grade.py``), and whatever the part
  leaves running is killed before that: its process group, and (on Linux, where the grader
  is its descendants' subreaper: ``orphans.py``) any daemon that left the group;
* every part starts from a fresh engine, so one part's leaked KV blocks cannot fail the next.

The parent then trusts nothing the part wrote: :func:`~autograder.results.parse_part_result`
checks it against the spec's points. A timeout, a non-zero exit without a result or an
unusable result becomes one zero-score entry whose output says what happened and ends with
the last lines of the part's log. The log (stdout and stderr together) is kept in
``<out>/logs/<part>.log`` for whoever wants the whole story.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .orphans import children, kill_new_children
from .results import Entry, PartResult, ResultError, make_entry, parse_part_result
from .spec import EXTRA_CREDIT_PARTS, ROOT, GradingSpec

LOG_TAIL_LINES = 25


@dataclass
class PartOutcome:
    """A part's result as the parent sees it: entries, how the process ended, and its wall time."""

    part: str
    result: PartResult
    status: str  # "ok", "timeout", "crashed", "invalid", "tampered" or "skipped"
    wall_time_s: float
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PartCommand:
    """How to start a part: everything but the result path, which the runner makes up."""

    part: str
    spec: GradingSpec
    impl: str
    scheduler_module: str | None = None


def part_env() -> dict[str, str]:
    """The part's environment: the repository importable, no network, no GUI, no stray threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def run_part(command: PartCommand, logs_dir: Path) -> PartOutcome:
    """Run one part to completion or to its time limit; never raises for anything the part does."""
    part_spec = command.spec.parts[command.part]
    limit = part_spec.time_limit_s
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = logs_dir / f"{command.part}.log"
    start = time.monotonic()
    # ignore_cleanup_errors: whatever the student's code left in its working directory (read-only
    # files, say) must not fail the grade.
    with tempfile.TemporaryDirectory(prefix=f"grade-{command.part}-", ignore_cleanup_errors=True) as workdir:
        result_path = Path(workdir) / "result.json"
        # The part reads a private copy of the spec the parent read: the same text, even if the
        # file changes meanwhile or was a pipe.
        spec_copy = Path(workdir) / "spec.toml"
        spec_copy.write_text(command.spec.text, encoding="utf-8")
        argv = [sys.executable, "-m", "autograder.parts", command.part, "--spec", str(spec_copy),
                "--impl", command.impl, "--result", str(result_path)]
        if command.scheduler_module:
            argv += ["--scheduler-module", command.scheduler_module]
        before = children()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, cwd=workdir, env=part_env(), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            timed_out = False
            try:
                returncode = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                returncode = proc.wait()
            finally:
                _kill_group(proc)  # whatever the part left running (servers, workers) goes too
        # And whatever left the group (a daemon in a session of its own), where the grader is
        # the subreaper of its descendants (see orphans.py): before reading anything back.
        orphans = kill_new_children(before)
        wall = time.monotonic() - start
        raw = result_path.read_bytes() if result_path.is_file() and not timed_out else None
    outcome = _outcome(command, raw, returncode, timed_out, wall, log_path)
    if orphans:
        outcome.notes.append(f"killed {orphans} process(es) that the part left running outside its process group")
    return outcome


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(command: PartCommand, raw: bytes | None, returncode: int, timed_out: bool, wall: float,
             log_path: Path) -> PartOutcome:
    part = command.part
    part_spec = command.spec.parts[part]
    tail = log_tail(log_path)
    if timed_out:
        hint = {
            "tests": "a test (or your scheduler under it) may never return",
            "correctness": "your scheduler may be stuck in a loop; look at schedule()",
        }.get(part, "your scheduler may be stuck in a loop or never schedule some requests; look at schedule()")
        message = f"timed out after {part_spec.time_limit_s:g} s: {hint}"
        return _failed(part, part_spec.points, "timeout", message, tail, wall, log_path)
    if raw is None:
        message = (f"the {part} part crashed (exit status {returncode}) before reporting a result; "
                   "the last lines of its log are below")
        if returncode < 0:
            message = f"the {part} part was killed by signal {-returncode} (out of memory?) before reporting a result"
        return _failed(part, part_spec.points, "crashed", message, tail, wall, log_path)
    try:
        result = parse_part_result(json.loads(raw.decode("utf-8")), part, part_spec.points,
                                   extra_credit=part in EXTRA_CREDIT_PARTS)
    except (ValueError, UnicodeDecodeError, ResultError) as err:
        return _failed(part, part_spec.points, "invalid", f"the {part} part reported an unusable result: {err}",
                       tail, wall, log_path)
    return PartOutcome(part, result, "ok", wall, log_path)


def _failed(part: str, points: float, status: str, message: str, tail: str, wall: float,
            log_path: Path) -> PartOutcome:
    output = message + (f"\n\nlast lines of the log:\n{tail}" if tail else "")
    entry = make_entry(f"{part}: {status}", 0.0, points, output, part=part)
    return PartOutcome(part, PartResult(part, [entry], message), status, wall, log_path)


def skipped_outcome(part: str, points: float, reason: str) -> PartOutcome:
    """A part not run because a part it requires did not get full marks."""
    entry = make_entry(f"{part}: not graded", 0.0, points, reason, part=part)
    return PartOutcome(part, PartResult(part, [entry], reason), "skipped", 0.0)


def tampered_outcome(part: str, points: float, changed: list[str], wall: float) -> PartOutcome:
    """The part changed the grader's own files (``integrity.py``): zero, naming them."""
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    message = (f"the submission changed the grader's own files while this part ran ({shown}); they were put "
               "back, this part scores 0 and no later part runs")
    entry = make_entry(f"{part}: grader files changed", 0.0, points, message, part=part)
    return PartOutcome(part, PartResult(part, [entry], message), "tampered", wall)


def grader_error_outcome(part: str, points: float, error: BaseException) -> PartOutcome:
    """The grader itself failed while running a part: zero, and a message for the course staff."""
    message = f"the grader failed ({type(error).__name__}: {error}); this is not your fault: tell the course staff"
    entry: Entry = make_entry(f"{part}: grader error", 0.0, points, message, part=part)
    return PartOutcome(part, PartResult(part, [entry], message), "crashed", 0.0)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log, without progress-bar noise."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    # A progress bar redraws its line with carriage returns: keep what was drawn last.
    kept = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join([line for line in kept if line.strip()][-lines:])
