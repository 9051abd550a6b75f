"""Grade an assignment: ``python -m autograder.grade a1 [--impl student|solution] [--out DIR] ...``.

    python -m autograder.grade a1                       your scheduler, every part of a1's spec.toml
    python -m autograder.grade a1 --impl solution       the reference solution (instructors)
    python -m autograder.grade a1 --parts tests,correctness
    python -m autograder.grade a1 --impl solution --profile gpu   the spec's [profiles.gpu] (engine, thresholds)
    python -m autograder.grade a1 --scheduler-module tests.schedulers.mixed_kv   (instructors, tests)

What it does: reads the grading spec, runs each selected part in its own process under the
part's time limit (``autograder.runner``), and writes into ``--out`` (default
``grade-results/<aN>``): ``results.json`` in Gradescope's format, ``junit.xml``, ``report.md``,
``report.png`` and ``logs/<part>.log``; it ends by printing a table of the parts.

Trust: only this process writes ``results.json``. The parts are never told the output
directory, every part result is re-checked here against the spec's points, and
``results.json`` is written last, atomically, always (also when every part failed, or when the
grader itself hits a bug), so a scheduler that writes its own ``results.json`` anywhere cannot
forge a grade: this one replaces it. Nothing a part started outlives it to overwrite it later:
its process group is killed, and so is any daemon that left the group (on Linux this process
is its descendants' subreaper, see ``orphans.py``). (A part runs the student's code in its own
process, so that process's private result file is not out of the student's reach; the checks
above bound what a forged one could claim to the part's points, and staff can compare with the
logs.)

The grader's own files are snapshotted before the first part and compared after each one
(``integrity.py``): a part that changed them is put back, scores 0, and ends the grade.

Parts may depend on others (``requires`` in the spec): performance requires full marks on
correctness, because a fast scheduler that corrupts outputs deserves no speed points; a part
whose requirement failed in this run is not run and scores 0 with a message that says why.

Exit status: 0 when grading completed, whatever the score; 2 for bad usage (an unknown
assignment, a missing or invalid spec, an unknown part), with a one-line message.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import assignments, report
from .integrity import Snapshot
from .orphans import become_subreaper
from .results import gradescope_results, junit_xml, write_atomic, write_json_atomic
from .runner import PartCommand, PartOutcome, grader_error_outcome, run_part, skipped_outcome, tampered_outcome
from .spec import EXTRA_CREDIT_PARTS, PART_NAMES, ROOT, GradingSpec, SpecError, default_spec_path, load_spec

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m autograder.grade", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("assignment", help="which assignment to grade, e.g. a1")
    parser.add_argument("--impl", choices=["student", "solution"], default="student",
                        help="grade your code (assignments/) or the reference solution (solutions/); default student")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: grade-results/<assignment>)")
    parser.add_argument("--spec", type=Path, default=None,
                        help="grading spec (default: the assignment's spec.toml, in solutions/ or assignments/)")
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help="grade under the spec's [profiles.NAME] overrides, e.g. gpu (default: the spec as it is)")
    parser.add_argument("--parts", default=None,
                        help=f"comma-separated parts to run, in any order, of {','.join(PART_NAMES)} "
                             "(default: every part the spec grades)")
    parser.add_argument("--scheduler-module", default=None, metavar="MODULE",
                        help="instructors and tests: grade this module's scheduler (a dotted path, e.g. "
                             "tests.schedulers.mixed_kv) instead of --impl's")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    return parser


def parse_parts(text: str | None, spec: GradingSpec) -> list[str]:
    """The parts to run, in the spec's grading order (None: all of them); SpecError for an unknown one."""
    if text is None:
        return list(spec.parts)
    asked = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in asked if p not in PART_NAMES]
    if unknown or not asked:
        raise SpecError(f"unknown part {unknown[0]!r}; choose from {', '.join(PART_NAMES)}" if unknown
                        else "--parts names no part")
    missing = [p for p in asked if p not in spec.parts]
    if missing:
        raise SpecError(f"{spec.path} does not grade part {missing[0]!r}")
    return [p for p in spec.parts if p in asked]


def grade(spec: GradingSpec, parts: Sequence[str], impl: str, out: Path, scheduler_module: str | None = None,
          quiet: bool = False, outcomes: list[PartOutcome] | None = None) -> tuple[list[PartOutcome], float]:
    """Run the parts in order, applying ``requires``; returns every part's outcome and the wall time.

    Outcomes are appended to ``outcomes`` as they come (when given), so that a caller interrupted
    half-way still has the parts that finished.
    """
    start = time.monotonic()
    outcomes = [] if outcomes is None else outcomes
    trusted = Snapshot()
    for index, part in enumerate(parts):
        part_spec = spec.parts[part]
        failed_requirements = [o.part for o in outcomes if o.part in part_spec.requires
                               and report.part_status(o) != "passed"]
        if failed_requirements:
            names = " and ".join(failed_requirements)
            # Extra credit not run is worth 0 of 0 here: whether the scheduler opted in is not known.
            extra = part in EXTRA_CREDIT_PARTS
            outcomes.append(skipped_outcome(part, 0.0 if extra else part_spec.points, (
                f"not graded: the {part} part{' (extra credit)' if extra else ''} needs full marks on {names} first "
                f"(a scheduler whose outputs are wrong earns no {part} points); fix {names} and grade again")))
            continue
        if not quiet:
            print(f"[grade] {part}: running (limit {part_spec.time_limit_s:g} s)...", flush=True)
        try:
            outcome = run_part(PartCommand(part, spec, impl, scheduler_module), out / "logs")
        except Exception as exc:  # the grader's own failure (cannot start Python, disk full...)
            traceback.print_exc()
            outcome = grader_error_outcome(part, part_spec.points, exc)
        not_checked = [r for r in part_spec.requires if r not in parts]
        if not_checked:
            outcome.notes.append(f"requirement {', '.join(not_checked)} not graded in this run")
        changed = trusted.changed()
        if changed:
            trusted.restore(changed)
            outcome = tampered_outcome(part, part_spec.points, changed, outcome.wall_time_s)
        outcomes.append(outcome)
        if not quiet:
            print(f"[grade] {part}: {report.part_status(outcome)} in {outcome.wall_time_s:.0f} s: "
                  f"{report.reason(outcome)}", flush=True)
        if changed:
            outcomes += [skipped_outcome(p, 0.0 if p in EXTRA_CREDIT_PARTS else spec.parts[p].points,
                                         f"not graded: the {part} part changed the grader's files")
                         for p in parts[index + 1:]]
            break
    return outcomes, time.monotonic() - start


def write_outputs(outcomes: list[PartOutcome], spec: GradingSpec, out: Path, execution_time: float,
                  graded: str) -> dict[str, object]:
    """junit.xml, report.md and report.png first (best effort), then results.json, atomically, last."""
    entries = [entry for outcome in outcomes for entry in outcome.result.entries]
    doc = gradescope_results(entries, execution_time, report.summary_line(outcomes, spec))
    try:
        write_atomic(out / "junit.xml", junit_xml(entries, spec.assignment, execution_time))
        plot_name: str | None = "report.png"
        try:
            report.plot(outcomes, out / "report.png", f"{spec.assignment}: {graded}")
        except Exception as exc:  # a plot is not worth a grade
            print(f"[grade] could not draw report.png: {type(exc).__name__}: {exc}", file=sys.stderr)
            plot_name = None
        write_atomic(out / "report.md", report.markdown(outcomes, spec, execution_time, graded, plot_name))
    finally:
        write_json_atomic(out / "results.json", doc)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "python -m autograder.grade"
    if not assignments.is_name(args.assignment):
        print(f"{prog}: error: {args.assignment!r} is not an assignment name like a1", file=sys.stderr)
        return USAGE_ERROR
    spec_path = args.spec or default_spec_path(args.assignment)
    try:
        if args.spec is None and not spec_path.is_file():
            known = ", ".join(assignments.graded_names()) or "none"
            raise SpecError(f"unknown assignment {args.assignment}: there is no grading spec "
                            f"{spec_path.relative_to(ROOT)} (graded here: {known})")
        spec = load_spec(spec_path, profile=args.profile)
        if spec.assignment != args.assignment:
            raise SpecError(f"{spec_path} grades {spec.assignment}, not {args.assignment}")
        parts = parse_parts(args.parts, spec)
    except SpecError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    out = (args.out or ROOT / "grade-results" / args.assignment).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)  # a stale grade must never pass for this one
    graded = args.scheduler_module or ("the reference solution" if args.impl == "solution" else
                                       f"assignments/{args.assignment}/scheduler.py")
    outcomes: list[PartOutcome] = []
    start = time.monotonic()
    # Orphans of the parts (daemons that left their process group) become this process's
    # children, so the runner can kill them before results.json is written (orphans.py).
    become_subreaper()
    try:
        grade(spec, parts, args.impl, out, args.scheduler_module, args.quiet, outcomes)
    except BaseException as exc:  # even Ctrl-C leaves a valid results.json behind
        done = {o.part for o in outcomes}
        outcomes += [grader_error_outcome(p, spec.parts[p].points, exc) for p in parts if p not in done]
        write_outputs(outcomes, spec, out, time.monotonic() - start, graded)
        raise
    execution_time = time.monotonic() - start
    write_outputs(outcomes, spec, out, execution_time, graded)
    print()
    print(report.console_table(outcomes, spec))
    print(f"\nwrote {out / 'results.json'}, junit.xml, report.md, report.png ({execution_time:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
