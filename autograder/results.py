"""Graded entries, and the files made from them: Gradescope's ``results.json`` and ``junit.xml``.

An :class:`Entry` is one line of the grade: a name, a score out of a maximum, passed or failed,
an explanation, and who may see it when. A part (``autograder.parts``) produces entries and
writes them, with a one-line summary and a few metrics for the report, to a private JSON file
(:class:`PartResult`); the parent reads that file back with :func:`parse_part_result`, which
trusts nothing in it: every field is type-checked, scores are clamped into ``[0, max_score]``
and the maxima must add up to the part's points in the spec, which the parent reads itself.

Gradescope's format (https://gradescope-autograders.readthedocs.io/en/latest/specs/): the top
level has ``score``, ``execution_time``, ``output`` and ``tests``; each test has ``name``,
``score``, ``max_score``, ``status`` (``passed``/``failed``), ``output`` and ``visibility``
(``hidden``, ``after_due_date``, ``after_published`` or ``visible``). The top-level score is
the sum of the tests' scores, computed here from the same rounded numbers so that the two
always agree. Files are written atomically (a temporary file in the same directory, then a
rename), so a reader never sees half a file and the last writer wins.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
STATUSES = ("passed", "failed")
MAX_OUTPUT_CHARS = 6000
SCORE_DIGITS = 4


class ResultError(ValueError):
    """A part's result file is unusable; the message says what is wrong with it."""


@dataclass(frozen=True)
class Entry:
    """One graded line. ``status`` is ``passed`` only with full marks."""

    name: str
    score: float
    max_score: float
    output: str = ""
    visibility: str = "visible"
    part: str = ""

    @property
    def status(self) -> str:
        return "passed" if self.score >= self.max_score - 1e-9 else "failed"

    def gradescope(self) -> dict[str, Any]:
        return {
            "name": self.name, "score": self.score, "max_score": self.max_score, "status": self.status,
            "output": self.output, "visibility": self.visibility,
        }


def make_entry(name: str, fraction: float, max_score: float, output: str = "", visibility: str = "visible",
               part: str = "") -> Entry:
    """An entry worth ``fraction`` (clamped to 0..1) of ``max_score``, rounded once, here."""
    fraction = min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else 0.0
    return Entry(name, round(fraction * max_score, SCORE_DIGITS), round(max_score, SCORE_DIGITS),
                 trim(output), visibility, part)


def trim(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """At most ``limit`` characters: the start and the end, which hold the message and the cause."""
    text = text.strip()
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def split_points(points: float, count: int) -> list[float]:
    """``points`` split into ``count`` rounded shares that add up to exactly ``points``."""
    if count <= 0:
        return []
    share = round(points / count, SCORE_DIGITS)
    shares = [share] * count
    shares[-1] = round(points - share * (count - 1), SCORE_DIGITS)
    return shares


@dataclass
class PartResult:
    """What a part process reports: its entries, one summary line, and metrics for the report."""

    part: str
    entries: list[Entry]
    summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"part": self.part, "summary": self.summary, "metrics": self.metrics,
                "tests": [asdict(e) for e in self.entries]}


def parse_part_result(data: object, part: str, points: float, extra_credit: bool = False) -> PartResult:
    """Check a part's JSON (as loaded) against the part's name and points; :class:`ResultError` if unusable.

    An ``extra_credit`` part may also report entries worth 0 in all: not attempted.
    """
    if not isinstance(data, dict):
        raise ResultError("the result is not a JSON object")
    if data.get("part") != part:
        raise ResultError(f"the result is for part {data.get('part')!r}, not {part!r}")
    tests = data.get("tests")
    if not isinstance(tests, list) or not tests:
        raise ResultError("the result has no test entries")
    entries = [_parse_entry(item, i, part) for i, item in enumerate(tests)]
    total = sum(e.max_score for e in entries)
    if abs(total - points) > 1e-6 * max(1.0, points) and not (extra_credit and total == 0):
        raise ResultError(f"the entries' max_score add up to {total:g}, but the part is worth {points:g} points")
    summary = data.get("summary", "")
    metrics = data.get("metrics", {})
    if not isinstance(summary, str) or not isinstance(metrics, dict):
        raise ResultError("'summary' must be a string and 'metrics' an object")
    return PartResult(part, entries, summary.strip().splitlines()[0][:300] if summary.strip() else "", metrics)


def _parse_entry(item: object, index: int, part: str) -> Entry:
    where = f"test entry {index}"
    if not isinstance(item, dict):
        raise ResultError(f"{where} is not an object")
    name, output, visibility = item.get("name"), item.get("output", ""), item.get("visibility", "visible")
    score, max_score = item.get("score"), item.get("max_score")
    if not isinstance(name, str) or not name:
        raise ResultError(f"{where} has no name")
    numbers = [v for v in (score, max_score) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != 2 or not all(math.isfinite(v) for v in numbers) or max_score < 0:  # type: ignore[operator]
        raise ResultError(f"{where} ({name}) has no valid score/max_score")
    if not isinstance(output, str) or visibility not in VISIBILITIES:
        raise ResultError(f"{where} ({name}) has an invalid output or visibility")
    clamped = min(max(float(score), 0.0), float(max_score))  # type: ignore[arg-type]
    return Entry(name, round(clamped, SCORE_DIGITS), round(float(max_score), SCORE_DIGITS),  # type: ignore[arg-type]
                 trim(output), visibility, part)


# ---- the files the parent writes ------------------------------------------------------------


def gradescope_results(entries: list[Entry], execution_time: float, output: str) -> dict[str, Any]:
    """Gradescope's results.json document; ``score`` is the sum of the entries' scores."""
    return {
        "score": round(sum(e.score for e in entries), SCORE_DIGITS),
        "execution_time": round(execution_time, 1),
        "output": output,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [e.gradescope() for e in entries],
    }


def validate_gradescope(doc: object) -> list[str]:
    """Problems with a results.json document (empty when it is valid). Used by the tests and as a self-check."""
    if not isinstance(doc, dict):
        return ["the document is not an object"]
    problems = [f"missing top-level key {k!r}" for k in ("score", "execution_time", "output", "tests") if k not in doc]
    tests = doc.get("tests")
    if not isinstance(tests, list):
        return problems + ["'tests' is not a list"]
    for i, test in enumerate(tests):
        if not isinstance(test, dict):
            problems.append(f"tests[{i}] is not an object")
            continue
        missing = [k for k in ("name", "score", "max_score", "status", "output", "visibility") if k not in test]
        if missing:
            problems.append(f"tests[{i}] lacks {missing}")
            continue
        if test["status"] not in STATUSES or test["visibility"] not in VISIBILITIES:
            problems.append(f"tests[{i}] has status {test['status']!r} / visibility {test['visibility']!r}")
        if not 0 <= test["score"] <= test["max_score"]:
            problems.append(f"tests[{i}] scores {test['score']} of {test['max_score']}")
    if isinstance(tests, list) and isinstance(doc.get("score"), (int, float)):
        total = sum(t.get("score", 0) for t in tests if isinstance(t, dict))
        if abs(total - doc["score"]) > 1e-6:
            problems.append(f"score {doc['score']} is not the sum of the tests' scores ({total})")
    return problems


def junit_xml(entries: list[Entry], suite: str, execution_time: float) -> bytes:
    """A JUnit XML document with one testcase per entry; a failure carries the entry's output."""
    failures = sum(1 for e in entries if e.status == "failed")
    root = ET.Element("testsuites", tests=str(len(entries)), failures=str(failures), time=f"{execution_time:.1f}")
    suite_el = ET.SubElement(root, "testsuite", name=suite, tests=str(len(entries)), failures=str(failures),
                             errors="0", skipped="0", time=f"{execution_time:.1f}")
    for entry in entries:
        case = ET.SubElement(suite_el, "testcase", classname=f"{suite}.{entry.part or 'grade'}",
                             name=_xml_safe(entry.name))
        ET.SubElement(case, "properties").extend([
            ET.Element("property", name="score", value=f"{entry.score:g}"),
            ET.Element("property", name="max_score", value=f"{entry.max_score:g}"),
            ET.Element("property", name="visibility", value=entry.visibility),
        ])
        if entry.status == "failed":
            first = entry.output.splitlines()[0] if entry.output else "failed"
            message = _xml_safe(f"{entry.score:g}/{entry.max_score:g}: {first}"[:500])
            failure = ET.SubElement(case, "failure", message=message)
            failure.text = _xml_safe(entry.output)
        elif entry.output:
            ET.SubElement(case, "system-out").text = _xml_safe(entry.output)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _xml_safe(text: str) -> str:
    """Drop the control characters XML 1.0 cannot hold (a test's output may contain any byte)."""
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, doc: object) -> None:
    write_atomic(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
