"""The human side of a grade: a console table, ``report.md`` and ``report.png``.

Everything here is a pure function of the parts' outcomes (:class:`~autograder.runner.
PartOutcome`) and the spec, so the report says exactly what ``results.json`` says. The table
has one row per part: score out of its points, a status (``passed``, ``partial``, ``failed``,
``timeout``, ``crashed``, ``not graded``, ``not attempted``) and a one-line reason. The total is
out of the spec's points without extra credit (an extra-credit part not attempted is worth 0 of
0; one attempted adds what it earned, and the total says how much of it is extra credit).
``report.md`` adds the performance part's figures (both schedulers', with the server's counters when it has them) and
its gates, and, for every entry without full marks, its whole output and what to look at (the
part's ``hint`` from the spec, or a generic default below: advice for one assignment belongs in
its spec). The plot has the part scores and, when those parts ran, throughput against the
baseline and accuracy against the reference with their 95% intervals; it uses
matplotlib's object-oriented API on the Agg canvas (no pyplot, so no global figure state and
no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .parts.gates import FIGURES
from .parts.performance import visible_columns
from .runner import PartOutcome
from .spec import EXTRA_CREDIT_PARTS, GradingSpec

DEFAULT_HINTS = {
    "tests": "Run the failing tests yourself with `pytest assignments/{a}/tests -x -q`; each failure shows the "
             "assertion and the values it compared.",
    "correctness": "Outputs must not depend on what else runs in a step: check that each sequence only reads and "
                   "writes its own blocks (block_table), that num_tokens is right for prefills and decodes, and "
                   "that finish() frees blocks only of the sequence that finished.",
    "accuracy": "An accuracy below the reference means outputs are corrupted under load (look at the correctness "
                "part first); request errors mean a hook raised or broke an invariant.",
    "performance": "Compare your figures with the baseline's in the table: each gate scores one of them. The "
                   "handout of {a} says what the scheduler should do to move it.",
    "slo": "Compare your SLO attainment with the baseline's in the table: the handout of {a} says which requests "
           "an SLO-aware policy should admit first.",
}
TIMEOUT_HINT = ("A part that times out usually has a scheduler stuck in a loop in schedule(), or one that never "
                "schedules some waiting request: make sure every call makes progress.")


def points(value: float) -> str:
    """A score for people: at most two decimals, no trailing zeros (11.7602 -> 11.76, 20.0 -> 20)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def part_status(outcome: PartOutcome) -> str:
    if outcome.status in ("timeout", "crashed", "invalid", "tampered"):
        return {"invalid": "crashed", "tampered": "changed the grader"}.get(outcome.status, outcome.status)
    if outcome.status == "skipped":
        return "not graded"
    score, maximum = _score(outcome)
    if outcome.part in EXTRA_CREDIT_PARTS and maximum == 0:
        return "not attempted"
    if score >= maximum - 1e-9:
        return "passed"
    return "partial" if score > 0 else "failed"


def _score(outcome: PartOutcome) -> tuple[float, float]:
    entries = outcome.result.entries
    return sum(e.score for e in entries), sum(e.max_score for e in entries)


def total(outcomes: Sequence[PartOutcome], sep: str = "/") -> str:
    """Every point earned, out of the points without extra credit: ``85/100``, ``93/100 (8 extra credit)``."""
    earned = sum(_score(o)[0] for o in outcomes)
    maximum = sum(_score(o)[1] for o in outcomes if o.part not in EXTRA_CREDIT_PARTS)
    extra = [_score(o) for o in outcomes if o.part in EXTRA_CREDIT_PARTS]
    text = f"{points(earned)}{sep}{points(maximum)}"
    if any(part_max > 0 for _, part_max in extra):  # attempted
        text += f" ({points(sum(score for score, _ in extra))} extra credit)"
    return text


def reason(outcome: PartOutcome) -> str:
    """One line: the part's own summary, or the first line of its first failing entry."""
    if outcome.result.summary:
        return outcome.result.summary.splitlines()[0]
    failing = [e for e in outcome.result.entries if e.status == "failed"]
    return (failing[0].output.splitlines() or [""])[0] if failing else ""


def console_table(outcomes: Sequence[PartOutcome], spec: GradingSpec, width: int = 110) -> str:
    rows = [("part", "score", "status", "reason")]
    for outcome in outcomes:
        score, maximum = _score(outcome)
        rows.append((outcome.part, f"{points(score)}/{points(maximum)}", part_status(outcome), reason(outcome)))
    rows.append(("total", total(outcomes), "", f"{spec.assignment}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    room = max(20, width - sum(widths) - 6)
    lines = []
    for i, row in enumerate(rows):
        text = row[3] if len(row[3]) <= room else row[3][: room - 3] + "..."
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {text}".rstrip())
        if i == 0 or i == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * min(room, 40))
    return "\n".join(lines)


def summary_line(outcomes: Sequence[PartOutcome], spec: GradingSpec) -> str:
    """The short summary for results.json's top-level ``output``."""
    parts = ", ".join(f"{o.part} {points(_score(o)[0])}/{points(_score(o)[1])} ({part_status(o)})" for o in outcomes)
    return f"{spec.assignment}: {total(outcomes)} points. {parts}. See report.md for details."


def markdown(outcomes: Sequence[PartOutcome], spec: GradingSpec, execution_time: float, graded: str,
             plot_name: str | None) -> str:
    lines = [f"# {spec.assignment} grade: {total(outcomes, ' / ')}", "",
             f"Graded: {graded}. Wall time: {execution_time:.0f} s. Spec: `{spec.path.name}`"
             + (f", profile `{spec.profile}`." if spec.profile else "."), "",
             "| part | score | status | reason |", "| --- | ---: | --- | --- |"]
    for outcome in outcomes:
        score, part_max = _score(outcome)
        lines.append(f"| {outcome.part} | {points(score)} / {points(part_max)} | {part_status(outcome)} | "
                     f"{_md_cell(reason(outcome))} |")
    lines.append(f"| **total** | **{total(outcomes, ' / ')}** | | |")
    notes = [f"- {o.part}: {note}" for o in outcomes for note in o.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    if plot_name:
        lines += ["", f"![scores, throughput and accuracy]({plot_name})"]
    for part, heading in (("performance", "Performance"), ("slo", "SLO attainment (extra credit)")):
        lines += performance_section(_metrics(next((o for o in outcomes if o.part == part), None)), heading)
    failing = [(o, e) for o in outcomes for e in o.result.entries if e.status == "failed"]
    if not failing:
        lines += ["", "Every part has full marks."]
    else:
        lines += ["", "## What did not get full marks", ""]
    seen_parts: set[str] = set()
    for outcome, entry in failing:
        lines += [f"### {entry.name} ({points(entry.score)} / {points(entry.max_score)})", "", "```text",
                  entry.output or "(no output)", "```", ""]
        if outcome.part not in seen_parts:
            seen_parts.add(outcome.part)
            lines += [f"**What to look at:** {hint(outcome, spec)}", ""]
    return "\n".join(lines).rstrip() + "\n"


def performance_section(perf: dict[str, Any], heading: str = "Performance") -> list[str]:
    """report.md's table of the performance figures and gates (nothing when the part measured nothing)."""
    if not perf.get("student") or not perf.get("gates"):
        return []
    runs = [("graded", perf["student"])] + ([(str(perf.get("baseline_label")), perf["baseline"])]
                                           if perf.get("baseline") else [])
    columns = visible_columns([level for _, level in runs])
    lines = ["", f"## {heading} ({perf.get('workload', 'default')} workload)", "",
             "| | " + " | ".join(header for header, _, _ in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for label, level in runs:
        cells = ["-" if level.get(key) is None else fmt.format(level[key]) for _, key, fmt in columns]
        lines.append(f"| {_md_cell(label)} | " + " | ".join(cells) + " |")
    lines += ["", "| gate | measured | 0 points at | full marks at | score |", "| --- | ---: | ---: | ---: | ---: |"]
    for gate in perf["gates"]:
        unit = "x" if gate["compare"] == "ratio" else ""
        name = f"{FIGURES.get(gate['metric'], ('', gate['metric']))[1]} ({gate['compare']})"
        value = "-" if gate["value"] is None else f"{gate['value']:.3g}{unit}"
        lines.append(f"| {name} | {value} | {gate['zero']:g}{unit} | {gate['full']:g}{unit} | "
                     f"{points(gate['fraction'] * gate['points'])} / {points(gate['points'])} |")
    return lines


def hint(outcome: PartOutcome, spec: GradingSpec) -> str:
    part_spec = spec.parts.get(outcome.part)
    text = (part_spec.hint if part_spec and part_spec.hint else DEFAULT_HINTS.get(outcome.part, "")).format(
        a=spec.assignment)
    if outcome.status == "timeout":
        text = f"{TIMEOUT_HINT} {text}"
    if outcome.log_path is not None:
        text += f" The part's full log is `logs/{outcome.log_path.name}`."
    return text


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plot(outcomes: Sequence[PartOutcome], path: Path, title: str) -> Path:
    """report.png: part scores, and throughput / accuracy panels when those parts measured something."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_part = {o.part: o for o in outcomes}
    perf = _metrics(by_part.get("performance"))
    acc = _metrics(by_part.get("accuracy"))
    datasets = acc.get("datasets") if isinstance(acc.get("datasets"), dict) else {}
    panels = 1 + bool(_throughputs(perf)) + bool(datasets)
    fig = Figure(figsize=(5 * panels, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    names = [o.part for o in outcomes]
    scores = [_score(o) for o in outcomes]
    ax.barh(names, [m for _, m in scores], color="#dddddd", label="points")
    ax.barh(names, [s for s, _ in scores],
            color=["#2a9d8f" if s >= m - 1e-9 else "#f4a261" if s > 0 else "#e76f51" for s, m in scores],
            label="score")
    ax.invert_yaxis()
    ax.set_xlabel("points")
    ax.set_title("score per part")
    index = 2
    if throughputs := _throughputs(perf):
        ax = fig.add_subplot(1, panels, index)
        index += 1
        labels = ["graded", str(perf.get("baseline_label", "baseline"))]
        ax.bar(labels, throughputs, color=["#264653", "#aaaaaa"])
        ax.set_ylabel("output tokens / s")
        ax.set_title(f"throughput: {throughputs[0] / throughputs[1]:.2f}x" + _full_marks(perf))
    if datasets:
        ax = fig.add_subplot(1, panels, index)
        xs, width = range(len(datasets)), 0.38
        for offset, who, color in ((-width / 2, "student", "#264653"), (width / 2, "reference", "#aaaaaa")):
            values = [100 * d[who]["accuracy"] for d in datasets.values()]
            low = [v - 100 * d[who]["ci95_low"] for v, d in zip(values, datasets.values())]
            high = [100 * d[who]["ci95_high"] - v for v, d in zip(values, datasets.values())]
            ax.bar([x + offset for x in xs], values, width, yerr=[low, high], capsize=4, color=color,
                   label="graded" if who == "student" else "reference")
        ax.set_xticks(list(xs), [name.upper() for name in datasets])
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy % (95% CI)")
        ax.set_title("accuracy vs the reference")
        ax.legend()
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _metrics(outcome: PartOutcome | None) -> dict[str, Any]:
    return outcome.result.metrics if outcome is not None and outcome.status == "ok" else {}


def _full_marks(perf: dict[str, Any]) -> str:
    """`` (full marks at 2x)`` when a gate scores the throughput ratio."""
    gates = [g for g in perf.get("gates") or []
             if g.get("metric") == "output_throughput" and g.get("compare") == "ratio"]
    return f" (full marks at {gates[0]['full']:g}x)" if gates else ""


def _throughputs(perf: dict[str, Any]) -> list[float]:
    try:
        values = [float(perf["student"]["output_throughput_tok_s"]), float(perf["baseline"]["output_throughput_tok_s"])]
    except (KeyError, TypeError, ValueError):
        return []
    return values if all(v > 0 for v in values) else []
