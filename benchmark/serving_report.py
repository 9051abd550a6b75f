"""Statistics, the results table, the JSON report and the plot of a serving benchmark run.

Pure functions over per-request results (:class:`~benchmark.serving_client.RequestResult`),
so every figure can be checked on made-up data without a server.

Definitions, per concurrency level:

* TTFT: from sending the request to the first chunk with content.
* latency: from sending the request to the end of the stream.
* TPOT: ``(latency - TTFT) / (output_tokens - 1)``, per request (requests of one token have none).
* ITL: the time between consecutive content chunks, divided by the tokens a chunk carries when
  the server batches several into one chunk (see ``serving_client``).
* output throughput: output tokens of the successful requests / wall time of the level.
* request throughput: successful requests / wall time of the level.
* SLO attainment (when a TTFT or TPOT target is given): the fraction of the level's requests
  whose TTFT and TPOT were both within their targets; a failed request misses, a request of
  one token has no TPOT and meets that target.

Percentiles interpolate linearly between order statistics (numpy's default); a figure with no
data (e.g. every request failed) is ``None`` in the JSON and ``-`` in the table. Latencies are
reported in milliseconds.

Server counters, per level: the difference of the server's Prometheus counters (``/metrics``)
scraped before and after the level (:data:`COUNTERS`; engine_core's ``engine_`` names, or
vLLM's ``vllm:`` ones). ``prefix_cache_hit_rate`` is hit tokens / queried prompt tokens;
``spec_accept_length`` is ``1 + accepted / drafts``, the tokens a sequence gains per verify
step. A counter the server does not export is ``None`` (and the table leaves its column out).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

PERCENTILES = (50, 99)
LATENCY_METRICS = ("ttft", "latency", "tpot", "itl")
MAX_ERROR_EXAMPLES = 10
# A level's counter field: the Prometheus counter it is the difference of, without its prefix.
COUNTERS = {
    "num_preemptions": "num_preemptions_total",
    "prefix_cache_hit_tokens": "prefix_cache_hits_total",
    "prefix_cache_query_tokens": "prefix_cache_queries_total",
    "spec_num_drafts": "spec_decode_num_drafts_total",
    "spec_num_draft_tokens": "spec_decode_num_draft_tokens_total",
    "spec_num_accepted_tokens": "spec_decode_num_accepted_tokens_total",
}
COUNTER_PREFIXES = ("engine_", "vllm:")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{.*\})?\s+(\S+)")


class ResultLike(Protocol):
    ok: bool
    error: str | None
    ttft: float | None
    latency: float | None
    itls: list[float]
    output_tokens: int
    prompt_tokens: int | None
    expected_output_tokens: int | None

    @property
    def tpot(self) -> float | None: ...


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; ``None`` for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def slo_attainment(results: Sequence[ResultLike], ttft_slo_ms: float = 0.0, tpot_slo_ms: float = 0.0) -> float | None:
    """The fraction of ``results`` within both targets (ms; 0 = no target); ``None`` with no target or no result."""
    if not (ttft_slo_ms or tpot_slo_ms) or not results:
        return None

    def met(r: ResultLike) -> bool:
        ttft, tpot = r.ttft, r.tpot
        return r.ok and (not ttft_slo_ms or (ttft is not None and ttft * 1000 <= ttft_slo_ms)) and (
            not tpot_slo_ms or tpot is None or tpot * 1000 <= tpot_slo_ms)

    return sum(1 for r in results if met(r)) / len(results)


def summarize_level(concurrency: int, results: Sequence[ResultLike], wall_time: float, ttft_slo_ms: float = 0.0,
                    tpot_slo_ms: float = 0.0, **extra: Any) -> dict[str, Any]:
    """Every figure of one concurrency level, as a flat JSON-ready dict (times in ms; targets 0 = none)."""
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    samples: dict[str, list[float]] = {
        "ttft": [r.ttft for r in ok if r.ttft is not None],
        "latency": [r.latency for r in ok if r.latency is not None],
        "tpot": [t for r in ok if (t := r.tpot) is not None],
        "itl": [gap for r in ok for gap in r.itls],
    }
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    summary: dict[str, Any] = {
        "concurrency": concurrency,
        "num_requests": len(results),
        "successes": len(ok),
        "failures": len(failed),
        "wall_time_s": wall_time,
        "total_output_tokens": output_tokens,
        "total_prompt_tokens": sum(prompt_tokens),
        "mean_prompt_tokens": mean(prompt_tokens),
        "mean_output_tokens": mean([r.output_tokens for r in ok]),
        # Successful requests that stopped before max_tokens: the server ignored ignore_eos
        # (or --no-ignore-eos was given), so the lengths are not what was asked for.
        "short_outputs": sum(
            1 for r in ok if r.expected_output_tokens is not None and r.output_tokens < r.expected_output_tokens
        ),
        "output_throughput_tok_s": output_tokens / wall_time if wall_time > 0 else None,
        "request_throughput_req_s": len(ok) / wall_time if wall_time > 0 else None,
        "slo_attainment": slo_attainment(results, ttft_slo_ms, tpot_slo_ms),
    }
    for name in LATENCY_METRICS:
        summary[f"{name}_mean_ms"] = _ms(mean(samples[name]))
        for q in PERCENTILES:
            summary[f"{name}_p{q}_ms"] = _ms(percentile(samples[name], q))
    reasons = Counter(r.error or "unknown error" for r in failed)
    summary["failure_reasons"] = dict(reasons.most_common(MAX_ERROR_EXAMPLES))
    summary.update(extra)
    return summary


def summarize_by_kind(
    concurrency: int, results: Sequence[ResultLike], kinds: Sequence[str], wall_time: float,
    ttft_slo_ms: float = 0.0, tpot_slo_ms: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """:func:`summarize_level` of each kind of request apart (long-prompt-mix: ``long`` and ``short``).

    Throughputs here are each kind's share over the whole level's wall time.
    """
    groups: dict[str, list[ResultLike]] = {}
    for result, kind in zip(results, kinds):
        groups.setdefault(kind, []).append(result)
    return {kind: summarize_level(concurrency, group, wall_time, ttft_slo_ms, tpot_slo_ms)
            for kind, group in sorted(groups.items())}


def parse_counters(exposition: str) -> dict[str, float]:
    """The :data:`COUNTERS` found in a Prometheus text exposition, by field, summed over their labels."""
    wanted = {prefix + name: field for field, name in COUNTERS.items() for prefix in COUNTER_PREFIXES}
    found: dict[str, float] = {}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) in wanted:
            try:
                value = float(match.group(2))
            except ValueError:
                continue
            field = wanted[match.group(1)]
            found[field] = found.get(field, 0.0) + value
    return found


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Each counter's increase over a level (None where a scrape lacks it), the hit rate and the accept length."""
    deltas: dict[str, Any] = {}
    for field in COUNTERS:
        if field in before and field in after:
            change = after[field] - before[field]
            deltas[field] = int(change) if float(change).is_integer() else change
        else:
            deltas[field] = None
    hits, queries = deltas["prefix_cache_hit_tokens"], deltas["prefix_cache_query_tokens"]
    drafts, accepted = deltas["spec_num_drafts"], deltas["spec_num_accepted_tokens"]
    deltas["prefix_cache_hit_rate"] = hits / queries if hits is not None and queries else None
    deltas["spec_accept_length"] = 1 + accepted / drafts if accepted is not None and drafts else None
    return deltas


# (header, key, format) of the table's columns.
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("conc", "concurrency", "{:d}"),
    ("ok", "successes", "{:d}"),
    ("fail", "failures", "{:d}"),
    ("out tok/s", "output_throughput_tok_s", "{:.1f}"),
    ("req/s", "request_throughput_req_s", "{:.3f}"),
    ("TTFT p50", "ttft_p50_ms", "{:.1f}"),
    ("TTFT p99", "ttft_p99_ms", "{:.1f}"),
    ("lat p50", "latency_p50_ms", "{:.0f}"),
    ("lat p99", "latency_p99_ms", "{:.0f}"),
    ("TPOT p50", "tpot_p50_ms", "{:.2f}"),
    ("TPOT p99", "tpot_p99_ms", "{:.2f}"),
    ("ITL p50", "itl_p50_ms", "{:.2f}"),
    ("ITL p99", "itl_p99_ms", "{:.2f}"),
)
# The SLO attainment column, shown when the run had targets.
SLO_COLUMNS: tuple[tuple[str, str, str], ...] = (("SLO met", "slo_attainment", "{:.1%}"),)
# Columns of the server's counters, shown when the server exports any.
COUNTER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("preempt", "num_preemptions", "{:.0f}"),
    ("cache hit tok", "prefix_cache_hit_tokens", "{:.0f}"),
    ("hit rate", "prefix_cache_hit_rate", "{:.1%}"),
    ("drafts", "spec_num_drafts", "{:.0f}"),
    ("accepted", "spec_num_accepted_tokens", "{:.0f}"),
    ("accept len", "spec_accept_length", "{:.2f}"),
)


def format_table(levels: Sequence[dict[str, Any]], ignore_eos: bool = True) -> str:
    """A plain-text table, one row per level, columns right-aligned; times in ms.

    The SLO column appears when the run had targets, the counter columns when some level has a
    counter; the note on short outputs only
    when outputs were meant to have their exact lengths (``ignore_eos``).
    """
    has_counters = any(level.get(key) is not None for level in levels for _, key, _ in COUNTER_COLUMNS)
    has_slo = any(level.get("slo_attainment") is not None for level in levels)
    columns = TABLE_COLUMNS + (SLO_COLUMNS if has_slo else ()) + (COUNTER_COLUMNS if has_counters else ())
    rows = [[header for header, _, _ in columns]]
    for level in levels:
        rows.append(["-" if level.get(key) is None else fmt.format(level[key]) for _, key, fmt in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    text = "\n".join(lines) + "\n(times in ms: TTFT, completion latency, TPOT, inter-token latency)"
    failures = [(level["concurrency"], reason, count) for level in levels
                for reason, count in level.get("failure_reasons", {}).items()]
    short = sum(level.get("short_outputs", 0) for level in levels)
    if short and ignore_eos:
        text += f"\nnote: {short} requests stopped before max_tokens (does the server ignore ignore_eos?)"
    if failures:
        text += "\nfailures:\n" + "\n".join(
            f"  concurrency {conc}: {count} x {reason}" for conc, reason, count in failures
        )
    return text


def build_report(config: dict[str, Any], levels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``--output-json`` document: the run's configuration and every level's figures."""
    return {
        "benchmark": "serving",
        "config": config,
        "levels": list(levels),
        "total_failures": sum(level["failures"] for level in levels),
    }


def plot_report(levels: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """A PNG of throughput, TTFT p50 and TPOT p50 against concurrency (three panels)."""
    # The object-oriented API with the Agg canvas: no pyplot, so no global figure state and
    # no GUI backend, whatever the environment's matplotlib default.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conc = [level["concurrency"] for level in levels]
    panels = [
        ("output throughput", "output tokens / s", "output_throughput_tok_s"),
        ("time to first token (p50)", "TTFT p50 (ms)", "ttft_p50_ms"),
        ("time per output token (p50)", "TPOT p50 (ms)", "tpot_p50_ms"),
    ]
    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (label, ylabel, key) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        points = [(c, level[key]) for c, level in zip(conc, levels) if level.get(key) is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        if len(set(conc)) > 1 and min(conc) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.set_xlabel("concurrency (clients)")
        ax.set_ylabel(ylabel)
        ax.set_title(label)
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
