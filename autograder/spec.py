"""Grading specs: what one assignment is graded on, read from its folder's ``spec.toml``.

A spec names the assignment, the baseline scheduler that performance is compared against, the
reference scheduler that accuracy is compared against, the engine the parts run on, and up to
five parts (``tests``, ``correctness``, ``accuracy``, ``performance``, ``slo``), each with its
points, its time limit and its parameters. ``slo`` is extra credit (:data:`EXTRA_CREDIT_PARTS`):
a performance part that grades only schedulers that opt in, with points on top of the total.
The performance part is scored by *gates* (``[[parts.performance.gates]]``): a figure of the
serving benchmark, as a ratio or a difference against the baseline's or as an absolute value,
from a zero threshold to a full-marks one. *Profiles*
(``[profiles.<name>]``) override the engine and the parts for other hardware (``--profile
gpu``). ``solutions/a1/spec.toml`` documents every field in comments.

Design: the spec is plain data, parsed into frozen dataclasses in the parent (which parts to
run, their time limits and points) and again in each part's subprocess (its parameters), so
nothing but a file crosses the process boundary; a chosen profile travels in that file as its
top-level ``profile`` key. Parsing is strict, because a typo in a spec would otherwise grade a
whole class on a default: an unknown key, a missing one, a value of the wrong type or out of
its range (declared on the field) is a one-line :class:`SpecError` naming the key. Every
profile is parsed, chosen or not, so that a typo in the GPU profile shows on a laptop.
Parameters with a sensible default may be left out (the test specs in ``tests/test_grader.py``
rely on that); ``points`` and ``time_limit_s`` never may.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmark.serving_workloads import WORKLOADS

from . import assignments

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = assignments.ROOT
PART_NAMES = ("tests", "correctness", "accuracy", "performance", "slo")
# Parts whose points come on top of the total; each grades only a scheduler that opts in.
EXTRA_CREDIT_PARTS = ("slo",)
CORRECTNESS_WORKLOADS = ("chat", "shared-prefix", "repetitive", "long-prompt-mix")
PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")


class SpecError(ValueError):
    """The spec cannot be used; the message is one line naming the file and the key."""


def _field(default: Any = dataclasses.MISSING, *, low: float | None = None, above: float | None = None,
           high: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field with its allowed values: ``low <= v``, ``above < v``, ``v <= high``, one of ``choices``."""
    return field(default=default, metadata={"low": low, "above": above, "high": high, "choices": choices})


@dataclass(frozen=True)
class Metric:
    """A figure of the serving benchmark that a gate can score."""

    lower_is_better: bool
    counter: bool = False  # a server counter, which a baseline may lack: absolute gates only


METRICS: dict[str, Metric] = {
    "output_throughput": Metric(False), "request_throughput": Metric(False),
    **{f"{name}_p{q}": Metric(True) for name in ("ttft", "tpot", "itl", "latency") for q in (50, 99)},
    "accept_length": Metric(False, counter=True), "preemptions": Metric(False, counter=True),
    "prefix_cache_hit_rate": Metric(False, counter=True), "slo_attainment": Metric(False),
}


@dataclass(frozen=True)
class EngineSpec:
    """The engine every part runs on (one per part process) and the loop's limits."""

    model: str = "bundled"
    device: str = "cpu"
    dtype: str = "float32"
    max_num_seqs: int = _field(64, low=1)
    max_num_batched_tokens: int = _field(2048, low=1)
    chunked_prefill_size: int = _field(512, low=1)  # prompt tokens per step for schedulers that chunk (a3 on)
    num_kv_blocks: int = _field(0, low=0)  # 0: sized from the default memory budget
    block_size: int = _field(16, low=1)
    max_model_len: int = _field(0, low=0)  # 0: the model's limit


@dataclass(frozen=True)
class PartSpec:
    """What every part has: points, a wall-clock limit, parts it needs full marks on, a hint."""

    points: float = _field(low=0)
    time_limit_s: float = _field(above=0)
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
    per_test_timeout_s: float = _field(60.0, above=0)


@dataclass(frozen=True)
class CorrectnessSpec(PartSpec):
    """Concurrent greedy requests through the loop must equal each request run alone."""

    num_prompts: int = _field(8, low=1)
    concurrency: int = _field(8, low=1)
    max_tokens: int = _field(24, low=1)
    scoring: str = _field("all_or_nothing", choices=("all_or_nothing", "proportional"))
    workload: str = _field("chat", choices=CORRECTNESS_WORKLOADS)
    ignore_eos: bool = True
    num_kv_blocks: int = _field(0, low=0)  # a smaller pool for this part; 0: the [engine]'s
    min_preemptions: int = _field(0, low=0)
    min_cached_tokens: int = _field(0, low=0)
    min_accepted_tokens: int = _field(0, low=0)


@dataclass(frozen=True)
class AccuracySpec(PartSpec):
    """MMLU / GSM8K accuracy through the server, against the reference scheduler's."""

    mmlu_samples: int = _field(40, low=0)
    gsm8k_samples: int = _field(8, low=0)
    mmlu_max_tokens: int = _field(32, low=1)
    gsm8k_max_tokens: int = _field(160, low=1)
    tolerance: float = _field(0.10, low=0, high=1)  # accuracy points
    min_agreement: float = _field(0.0, low=0, high=1)  # a fraction of the items
    concurrency: int = _field(8, low=1)
    seed: int = 0
    data_source: str = _field("local", choices=("local", "auto", "hub"))
    request_timeout_s: float = _field(300.0, above=0)


@dataclass(frozen=True)
class GateSpec:
    """One scored figure of the performance part: linear from ``zero`` (no points) to ``full``."""

    metric: str = _field(choices=tuple(METRICS))
    # ratio: > 1 when the graded scheduler is better; difference: graded - baseline, > 0 when better
    compare: str = _field(choices=("ratio", "absolute", "difference"))
    zero: float = _field()
    full: float = _field()
    points: float = _field(low=0)
    direction: str = _field("", choices=("", "higher", "lower"))  # which is better; "": the metric's own
    requests: str = _field("all", choices=("all", "short", "long"))  # short/long: long-prompt-mix's kinds

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower" if self.direction else METRICS[self.metric].lower_is_better


@dataclass(frozen=True)
class PerformanceSpec(PartSpec):
    """The serving benchmark on the graded scheduler (and the baseline, for ratio gates), scored by gates."""

    input_len: int = _field(64, low=1)
    output_len: int = _field(32, low=1)
    concurrency: int = _field(16, low=1)
    num_requests: int = _field(32, low=1)
    workload: str = _field("default", choices=tuple(WORKLOADS))
    randomness: float = _field(1.0, low=0, high=1)
    output_slack: float = _field(1.0, low=1)  # > 1: max_tokens = output_len x slack, requests may stop at EOS
    dataset: str = "random"
    seed: int = 0
    request_timeout_s: float = _field(120.0, above=0)
    ttft_slo_ms: float = _field(0.0, low=0)  # the engine's and the benchmark's SLO targets; 0: none
    tpot_slo_ms: float = _field(0.0, low=0)
    gates: tuple[GateSpec, ...] = ()


PART_TYPES: dict[str, type[PartSpec]] = {
    "tests": TestsSpec, "correctness": CorrectnessSpec, "accuracy": AccuracySpec, "performance": PerformanceSpec,
    "slo": PerformanceSpec,
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
    profile: str = ""  # the profile applied ("" = none)
    text: str = field(default="", repr=False)  # the file as read, profile chosen: each part process gets a copy

    @property
    def total_points(self) -> float:
        """The points of the grade, extra credit left out."""
        return sum(part.points for name, part in self.parts.items() if name not in EXTRA_CREDIT_PARTS)

    def resolve_path(self, path: str) -> Path:
        """A path from the spec: absolute as given, relative to the repository root otherwise."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else ROOT / candidate


def default_spec_path(assignment: str) -> Path:
    """``solutions/<aN>/spec.toml``, or ``assignments/<aN>/spec.toml`` in a student release."""
    return assignments.spec_path(assignment)


def load_spec(path: str | Path, profile: str | None = None) -> GradingSpec:
    """Parse and check a spec file, under ``profile`` if given; :class:`SpecError` if it is unusable."""
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
    if profile is not None:
        text = _with_profile(text, data, profile, path)
        data["profile"] = profile
    return dataclasses.replace(parse_spec(data, path), text=text)


def _with_profile(text: str, data: dict[str, Any], profile: str, path: Path) -> str:
    """The spec's text with ``profile`` chosen at its top, as the part processes will read it."""
    if not PROFILE_NAME.fullmatch(profile):
        raise SpecError(f"{path}: {profile!r} is not a profile name (letters, digits, '-' and '_')")
    chosen = data.get("profile")
    if chosen == profile:
        return text
    if chosen is not None:
        raise SpecError(f"{path}: the spec chooses profile {chosen!r} itself ('profile'), which conflicts "
                        f"with --profile {profile}")
    return f"profile = {json.dumps(profile)}\n{text}"


def parse_spec(data: dict[str, Any], path: Path) -> GradingSpec:
    """The :class:`GradingSpec` of a parsed TOML document (``path`` is for messages).

    Every profile is parsed too; the one named by the top-level ``profile`` key is applied.
    """
    where = str(path)
    top = dict(data)
    profiles = _table(top.pop("profiles", {}), f"{where}: [profiles]")
    chosen = top.pop("profile", "")
    if not isinstance(chosen, str):
        raise SpecError(f"{where}: 'profile' must be a string, not {chosen!r}")
    selected = base = _parse_document(top, path, where)
    for name, overrides in profiles.items():
        label = f"{where}: [profiles.{name}]"
        if not PROFILE_NAME.fullmatch(name):
            raise SpecError(f"{label}: a profile name has only letters, digits, '-' and '_'")
        _check_profile_keys(_table(overrides, label), base, label)
        spec = _parse_document(_merged(top, overrides), path, f"{where} (profile {name})")
        if name == chosen:
            selected = dataclasses.replace(spec, profile=name)
    if chosen and selected is base:
        raise SpecError(f"{where}: there is no [profiles.{chosen}] (profiles: {', '.join(profiles) or 'none'})")
    return selected


def _parse_document(data: dict[str, Any], path: Path, where: str) -> GradingSpec:
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
    problems = _cross_field_problems(spec)
    if problems:
        raise SpecError(f"{where}: {problems[0]}")
    return spec


def _check_profile_keys(overrides: dict[str, Any], base: GradingSpec, label: str) -> None:
    """A profile changes the engine and the parts that the spec grades, with the keys they have."""
    _no_unknown(overrides, {"engine", "parts"}, label)
    engine = _table(overrides.get("engine", {}), f"{label}.engine")
    _no_unknown(engine, {f.name for f in dataclasses.fields(EngineSpec)}, f"{label}.engine")
    parts = _table(overrides.get("parts", {}), f"{label}.parts")
    _no_unknown(parts, set(base.parts), f"{label}.parts")
    for name, table in parts.items():
        fields = {f.name for f in dataclasses.fields(PART_TYPES[name])}
        _no_unknown(_table(table, f"{label}.parts.{name}"), fields, f"{label}.parts.{name}")


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: tables key by key; any other value (a list of gates too) replaced."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


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
    """``cls(**table)`` with every value checked against the field's declared type and range."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    _no_unknown(table, set(fields), where)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SpecError(f"{where}: missing key {name!r}")
            continue
        values[name] = _coerce(table[name], str(f.type), f"{where}: {name!r}")
        if problem := _out_of_range(values[name], f.metadata):
            raise SpecError(f"{where}: {name!r} {problem}")
    return cls(**values)


def _coerce(value: object, type_name: str, where: str) -> object:
    """Check one value against an annotation (``int``, ``float``, ``bool``, ``str``, a tuple of ``str`` or of gates)."""
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} must be an integer, not {value!r}")
        return value
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where} must be a number, not {value!r}")
        return float(value)
    if type_name in ("bool", "str"):
        if not isinstance(value, bool if type_name == "bool" else str):
            raise SpecError(f"{where} must be {'true or false' if type_name == 'bool' else 'a string'}, not {value!r}")
        return value
    if type_name.startswith("tuple[str"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{where} must be a list of strings, not {value!r}")
        return tuple(value)
    if type_name.startswith("tuple[GateSpec"):
        if not isinstance(value, list):
            raise SpecError(f"{where} must be a list of tables ([[...gates]]), not {value!r}")
        return tuple(_build(GateSpec, _table(gate, f"{where} #{i + 1}"), f"{where} #{i + 1}")
                     for i, gate in enumerate(value))
    raise SpecError(f"{where}: unsupported field type {type_name}")  # pragma: no cover


def _out_of_range(value: Any, meta: Any) -> str | None:
    """Why ``value`` is outside the range declared by :func:`_field`, or None."""
    if meta.get("choices") and value not in meta["choices"]:
        return f"must be one of {', '.join(repr(c) for c in meta['choices'])}, not {value!r}"
    if meta.get("low") is not None and value < meta["low"]:
        return f"must be at least {meta['low']:g}, not {value!r}"
    if meta.get("above") is not None and value <= meta["above"]:
        return f"must be above {meta['above']:g}, not {value!r}"
    if meta.get("high") is not None and value > meta["high"]:
        return f"must be at most {meta['high']:g}, not {value!r}"
    return None


def _cross_field_problems(spec: GradingSpec) -> list[str]:
    """The rules that involve several fields; the first one broken is the error."""
    problems = []
    for name, part in spec.parts.items():
        for required in part.requires:
            if required not in PART_NAMES or PART_NAMES.index(required) >= PART_NAMES.index(name):
                problems.append(f"[parts.{name}] requires {required!r}, which is not a part graded before it")
    acc = spec.parts.get("accuracy")
    if isinstance(acc, AccuracySpec) and acc.mmlu_samples + acc.gsm8k_samples == 0:
        problems.append("[parts.accuracy] mmlu_samples and gsm8k_samples are both 0: nothing to measure")
    for name, part in spec.parts.items():
        if isinstance(part, PerformanceSpec):
            problems += [f"[parts.{name}] {p}" for p in _performance_problems(part, spec.engine, name)]
    return problems


def _performance_problems(perf: PerformanceSpec, engine: EngineSpec, name: str) -> list[str]:
    problems = []
    if perf.concurrency > engine.max_num_seqs:
        problems.append("concurrency is above [engine] max_num_seqs")
    if not perf.gates:
        problems.append(f"needs at least one [[parts.{name}.gates]]")
    for i, gate in enumerate(perf.gates):
        problems += [f"'gates' #{i + 1}: {p}" for p in gate_problems(gate, perf.workload)]
        if gate.metric == "slo_attainment" and not (perf.ttft_slo_ms or perf.tpot_slo_ms):
            problems.append(f"'gates' #{i + 1}: slo_attainment needs ttft_slo_ms or tpot_slo_ms")
    total = sum(gate.points for gate in perf.gates)
    if perf.gates and abs(total - perf.points) > 1e-6:
        problems.append(f"the gates' points add up to {total:g}, not the part's {perf.points:g}")
    return problems


def gate_problems(gate: GateSpec, workload: str) -> list[str]:
    """What is wrong with one gate of a part with this workload (empty when nothing is)."""
    problems = []
    if gate.requests != "all" and workload != "long-prompt-mix":
        problems.append(f"requests = {gate.requests!r} needs workload 'long-prompt-mix' (its short and long requests)")
    if gate.compare != "absolute" and METRICS[gate.metric].counter:
        problems.append(f"{gate.metric} is a server counter that a baseline may lack: use compare = 'absolute'")
    elif gate.compare == "ratio" and not gate.full > gate.zero >= 0:
        problems.append("a ratio gate needs full > zero >= 0 (ratios are above 1 when the graded scheduler is better)")
    elif gate.compare == "difference" and not gate.full > gate.zero:
        problems.append("a difference gate needs full > zero (above 0 means the graded scheduler is better)")
    elif gate.compare == "absolute" and gate.lower_is_better and not gate.full < gate.zero:
        problems.append(f"lower {gate.metric} is better, so full must be below zero")
    elif gate.compare == "absolute" and not gate.lower_is_better and not gate.full > gate.zero:
        problems.append(f"higher {gate.metric} is better, so full must be above zero")
    return problems
