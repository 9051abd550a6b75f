"""Grading specs: what one assignment is graded on, read from its folder's ``spec.toml``.

A spec names the assignment, the baseline scheduler that performance is compared against, the
reference scheduler that accuracy is compared against, the engine the parts run on, and up to
four parts (``tests``, ``correctness``, ``accuracy``, ``performance``), each with its points,
its time limit and its parameters. ``solutions/a1/spec.toml`` documents every field in comments.

Design: the spec is plain data, parsed once into frozen dataclasses, in the parent (to know
which parts to run, their time limits and points) and again in each part's subprocess (for
its parameters), so nothing but a file path crosses the process boundary. Parsing is strict:
an unknown key, a missing one or a value of the wrong type is a :class:`SpecError` naming the
key, because a typo in a spec would otherwise grade a whole class on a default. Parameters
that have a sensible default may be left out (the test specs in ``tests/test_grader.py``
rely on that); ``points`` and ``time_limit_s`` never may.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import assignments

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = assignments.ROOT
PART_NAMES = ("tests", "correctness", "accuracy", "performance")


class SpecError(ValueError):
    """The spec cannot be used; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class EngineSpec:
    """The engine every part runs on (one per part process) and the loop's limits."""

    model: str = "bundled"
    device: str = "cpu"
    dtype: str = "float32"
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048


@dataclass(frozen=True)
class PartSpec:
    """What every part has: points, a wall-clock limit, parts it needs full marks on, a hint."""

    points: float
    time_limit_s: float
    requires: tuple[str, ...] = ()
    hint: str = ""


@dataclass(frozen=True)
class TestsSpec(PartSpec):
    """pytest over the assignment's tests (the instructor tree with hidden tests when present).

    Left empty, the directories are the assignment's own: ``solutions/<aN>/tests`` and
    ``assignments/<aN>/tests``.
    """

    public_dir: str = ""
    instructor_dir: str = ""
    per_test_timeout_s: float = 60.0


@dataclass(frozen=True)
class CorrectnessSpec(PartSpec):
    """Concurrent greedy requests through the loop must equal each request run alone."""

    num_prompts: int = 8
    concurrency: int = 8
    max_tokens: int = 24
    scoring: str = "all_or_nothing"


@dataclass(frozen=True)
class AccuracySpec(PartSpec):
    """MMLU / GSM8K accuracy through the server, against the reference scheduler's."""

    mmlu_samples: int = 40
    gsm8k_samples: int = 8
    mmlu_max_tokens: int = 32
    gsm8k_max_tokens: int = 160
    tolerance: float = 0.10
    min_agreement: float = 0.0
    concurrency: int = 8
    seed: int = 0
    data_source: str = "local"
    request_timeout_s: float = 300.0


@dataclass(frozen=True)
class PerformanceSpec(PartSpec):
    """Serving throughput against the baseline scheduler's, scored on the ratio."""

    input_len: int = 64
    output_len: int = 32
    concurrency: int = 16
    num_requests: int = 32
    full_ratio: float = 2.0
    zero_ratio: float = 1.2
    dataset: str = "random"
    seed: int = 0
    request_timeout_s: float = 120.0


PART_TYPES: dict[str, type[PartSpec]] = {
    "tests": TestsSpec, "correctness": CorrectnessSpec, "accuracy": AccuracySpec, "performance": PerformanceSpec,
}


@dataclass(frozen=True)
class GradingSpec:
    """One assignment's grading: its schedulers, its engine and its parts (in grading order)."""

    path: Path
    assignment: str
    baseline: str
    reference: str
    engine: EngineSpec = field(default_factory=EngineSpec)
    parts: dict[str, PartSpec] = field(default_factory=dict)
    text: str = field(default="", repr=False)  # the file as read: each part process gets a copy

    @property
    def total_points(self) -> float:
        return sum(part.points for part in self.parts.values())

    def resolve_path(self, path: str) -> Path:
        """A path from the spec: absolute as given, relative to the repository root otherwise."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else ROOT / candidate


def default_spec_path(assignment: str) -> Path:
    """``solutions/<aN>/spec.toml``, or ``assignments/<aN>/spec.toml`` in a student release."""
    return assignments.spec_path(assignment)


def load_spec(path: str | Path) -> GradingSpec:
    """Parse and check a spec file; :class:`SpecError` with a one-line reason if it is unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise SpecError(f"no grading spec at {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read the grading spec {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    return dataclasses.replace(parse_spec(data, path), text=text)


def parse_spec(data: dict[str, Any], path: Path) -> GradingSpec:
    """The :class:`GradingSpec` of a parsed TOML document (``path`` is for messages)."""
    where = str(path)
    top = dict(data)
    parts_table = _table(top.pop("parts", {}), f"{where}: [parts]")
    engine = _build(EngineSpec, _table(top.pop("engine", {}), f"{where}: [engine]"), f"{where}: [engine]")
    known = {"assignment", "baseline", "reference"}
    _no_unknown(top, known, where)
    names = {}
    for key in sorted(known):
        if key not in top:
            raise SpecError(f"{where}: missing key {key!r}")
        value = top[key]
        if not isinstance(value, str) or not value:
            raise SpecError(f"{where}: {key!r} must be a non-empty string")
        names[key] = value
    if not assignments.is_name(names["assignment"]):
        raise SpecError(f"{where}: 'assignment' must look like a1, not {names['assignment']!r}")
    parts: dict[str, PartSpec] = {}
    _no_unknown(parts_table, set(PART_NAMES), f"{where}: [parts]")
    for name in PART_NAMES:  # grading order, whatever the order in the file
        if name in parts_table:
            label = f"{where}: [parts.{name}]"
            parts[name] = _build(PART_TYPES[name], _table(parts_table[name], label), label)
    if not parts:
        raise SpecError(f"{where}: no [parts.*] table; nothing to grade")
    spec = GradingSpec(path, names["assignment"], names["baseline"], names["reference"], engine, parts)
    _check(spec, where)
    return spec


T = TypeVar("T")


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a table")
    return dict(value)


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _build(cls: type[T], table: dict[str, Any], where: str) -> T:
    """``cls(**table)`` with every value checked against the field's declared type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    _no_unknown(table, set(fields), where)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SpecError(f"{where}: missing key {name!r}")
            continue
        values[name] = _coerce(table[name], str(f.type), f"{where}: {name!r}")
    return cls(**values)


def _coerce(value: object, type_name: str, where: str) -> object:
    """Check one value against an annotation (``int``, ``float``, ``str`` or ``tuple[str, ...]``)."""
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} must be an integer, not {value!r}")
        return value
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where} must be a number, not {value!r}")
        return float(value)
    if type_name == "str":
        if not isinstance(value, str):
            raise SpecError(f"{where} must be a string, not {value!r}")
        return value
    if type_name.startswith("tuple[str"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{where} must be a list of strings, not {value!r}")
        return tuple(value)
    raise SpecError(f"{where}: unsupported field type {type_name}")  # pragma: no cover


def _check(spec: GradingSpec, where: str) -> None:
    """Ranges and cross-field rules that types alone do not catch."""
    problems: list[str] = []
    if spec.engine.max_num_seqs < 1 or spec.engine.max_num_batched_tokens < 1:
        problems.append("[engine] max_num_seqs and max_num_batched_tokens must be at least 1")
    for name, part in spec.parts.items():
        if part.points < 0:
            problems.append(f"[parts.{name}] points must be >= 0")
        if part.time_limit_s <= 0:
            problems.append(f"[parts.{name}] time_limit_s must be > 0")
        for required in part.requires:
            if required not in PART_NAMES or PART_NAMES.index(required) >= PART_NAMES.index(name):
                problems.append(f"[parts.{name}] requires {required!r}, which is not a part graded before it")
    if isinstance(tests := spec.parts.get("tests"), TestsSpec):
        if tests.per_test_timeout_s <= 0:
            problems.append("[parts.tests] per_test_timeout_s must be > 0")
    if isinstance(corr := spec.parts.get("correctness"), CorrectnessSpec):
        if min(corr.num_prompts, corr.concurrency, corr.max_tokens) < 1:
            problems.append("[parts.correctness] num_prompts, concurrency and max_tokens must be at least 1")
        if corr.scoring not in ("all_or_nothing", "proportional"):
            problems.append("[parts.correctness] scoring must be 'all_or_nothing' or 'proportional'")
    if isinstance(acc := spec.parts.get("accuracy"), AccuracySpec):
        if min(acc.mmlu_samples, acc.gsm8k_samples) < 0 or acc.mmlu_samples + acc.gsm8k_samples == 0:
            problems.append("[parts.accuracy] sample counts must be >= 0 and not both 0")
        if min(acc.mmlu_max_tokens, acc.gsm8k_max_tokens, acc.concurrency) < 1:
            problems.append("[parts.accuracy] max_tokens and concurrency must be at least 1")
        if not 0 <= acc.tolerance <= 1:
            problems.append("[parts.accuracy] tolerance is in accuracy points, between 0 and 1")
        if not 0 <= acc.min_agreement <= 1:
            problems.append("[parts.accuracy] min_agreement is a fraction of the items, between 0 and 1")
        if acc.data_source not in ("auto", "hub", "local"):
            problems.append("[parts.accuracy] data_source must be auto, hub or local")
    if isinstance(perf := spec.parts.get("performance"), PerformanceSpec):
        if min(perf.input_len, perf.output_len, perf.concurrency, perf.num_requests) < 1:
            problems.append("[parts.performance] lengths, concurrency and num_requests must be at least 1")
        if not perf.full_ratio > perf.zero_ratio >= 0:
            problems.append("[parts.performance] needs full_ratio > zero_ratio >= 0")
        if perf.concurrency > spec.engine.max_num_seqs:
            problems.append("[parts.performance] concurrency is above [engine] max_num_seqs")
    if problems:
        raise SpecError(f"{where}: {problems[0]}")
