"""``python -m autograder.parts <part> --spec S --impl I --result R [--scheduler-module M]``.

Started by the grader (``autograder.runner``), one process per part; not meant to be run by
hand, though it can be, to debug one part: ``python -m autograder.parts correctness --spec
solutions/a1/spec.toml --impl solution --result /tmp/r.json``.

The part's result goes to ``R`` only (never to the grade's output directory, which this
process is not told). If the part raises, the result is one zero-score entry with the error.
The process then leaves with ``os._exit``: a student's scheduler may have left a thread
spinning (the engine loop's thread is a daemon, but a busy one still delays a normal exit),
and nothing is left to clean up that the operating system does not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from ..results import PartResult, make_entry, write_json_atomic
from ..spec import PART_NAMES, SpecError, load_spec
from . import part_runner
from .common import PartContext


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.parts", description="Run one graded part.")
    parser.add_argument("part", choices=PART_NAMES)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--impl", choices=["student", "solution"], default="student")
    parser.add_argument("--result", required=True, type=Path, help="where to write this part's result JSON")
    parser.add_argument("--scheduler-module", default=None, help="grade this module instead of --impl's")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        spec = load_spec(args.spec)
    except SpecError as err:
        print(f"autograder.parts: {err}", file=sys.stderr)
        return 2
    if args.part not in spec.parts:
        print(f"autograder.parts: {args.spec} has no [parts.{args.part}]", file=sys.stderr)
        return 2
    ctx = PartContext(spec, args.part, args.impl, args.scheduler_module, started)
    points = spec.parts[args.part].points
    try:
        result = part_runner(args.part)(ctx)
    except Exception as exc:  # a grader bug, or a failure the part did not anticipate
        traceback.print_exc()
        message = f"the {args.part} part failed: {type(exc).__name__}: {exc}"
        frames = "".join(traceback.format_exception(exc)[-6:])
        result = PartResult(args.part, [make_entry(f"{args.part}: error", 0.0, points, f"{message}\n\n{frames}",
                                                   part=args.part)], message)
    write_json_atomic(args.result, result.to_json())
    print(f"{args.part}: {result.summary} ({time.monotonic() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
