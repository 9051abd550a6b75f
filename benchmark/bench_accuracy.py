"""Accuracy of a running OpenAI-compatible server on MMLU or GSM8K.

    python -m engine_core --scheduler a1 --impl solution &          # the server, on port 8000
    python -m benchmark.bench_accuracy --dataset mmlu --num-samples 200
    python -m benchmark.bench_accuracy --dataset gsm8k --num-samples 100
    python -m benchmark.bench_accuracy --dataset mmlu --subjects abstract_algebra,anatomy

Why: a scheduler that mixes up KV blocks, drops a token or reorders a batch usually still
produces fluent text, so throughput numbers look fine while answers get worse. The same seeded
sample scored against the reference scheduler and against yours shows it.

Each item becomes one greedy (temperature 0), non-streaming POST /v1/chat/completions; at
most ``--concurrency`` are in flight (an asyncio semaphore). A request that fails (HTTP error,
timeout, broken connection) is recorded with its error, counted as a request failure and
scored wrong: never dropped, so the denominator is always the sample size. Replies are scored
by :mod:`benchmark.answer_extraction`; a reply with no answer in it is an extraction failure
(also wrong). Accuracy comes with a 95% Wilson score interval, which stays inside [0, 1] and
is honest for the small samples a CPU run allows.

Everything below the network code (prompts, scoring, the interval, per-subject tables, the
report) is plain functions on plain data, tested without a server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from .answer_extraction import extract_choice, extract_number, numbers_match
from .datasets import SOURCES, DatasetError, GSM8KItem, MMLUItem, load_gsm8k, load_mmlu, sample_items, sample_mmlu
from .serving_client import auth_headers

log = logging.getLogger("benchmark.bench_accuracy")

DEFAULT_NUM_SAMPLES = {"mmlu": 200, "gsm8k": 100}
# MMLU: room for "The answer is (B)." with a short preamble; GSM8K: room for the reasoning.
DEFAULT_MAX_TOKENS = {"mmlu": 32, "gsm8k": 256}
Z_95 = 1.959963984540054
REPLY_CHARS = 500  # per-item replies in the JSON are cut to this length


class BenchError(RuntimeError):
    """The benchmark cannot run (server unreachable, no model); the message says what to do."""


@dataclass(frozen=True)
class BenchConfig:
    """One run's settings; written to the JSON output as they were used."""

    dataset: str = "mmlu"
    num_samples: int | None = None  # None: the dataset's default; 0: the whole test set
    subjects: tuple[str, ...] = ()
    concurrency: int = 8
    seed: int = 0
    base_url: str = "http://127.0.0.1:8000"
    model: str | None = None  # None: the first id of GET /v1/models
    max_tokens: int | None = None  # None: the dataset's default
    source: str = "auto"
    timeout_s: float = 300.0
    output_json: str | None = None
    progress: bool = True

    def resolved(self) -> BenchConfig:
        """The config with the dataset defaults filled in."""
        return replace(
            self,
            num_samples=DEFAULT_NUM_SAMPLES[self.dataset] if self.num_samples is None else self.num_samples,
            max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS[self.dataset],
            base_url=normalize_base_url(self.base_url),
        )


@dataclass
class ItemResult:
    """The outcome of one item; ``reply`` is None when the request failed (``error`` says why)."""

    index: int
    id: str
    subject: str | None
    expected: str | float
    extracted: str | float | None
    correct: bool
    reply: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None


# ---- prompts and scoring ---------------------------------------------------------------------


def mmlu_messages(item: MMLUItem) -> list[dict[str, str]]:
    """A zero-shot chat prompt: the question, options A-D, and the answer format we parse first."""
    options = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", item.choices, strict=True))
    subject = item.subject.replace("_", " ")
    content = (
        f"The following is a multiple choice question about {subject}.\n\n"
        f"{item.question.strip()}\n{options}\n\n"
        'Answer with the letter of the correct option (A, B, C or D) in the form "The answer is (X)".'
    )
    return [{"role": "user", "content": content}]


def gsm8k_messages(item: GSM8KItem) -> list[dict[str, str]]:
    """A zero-shot chain-of-thought prompt that asks for the final line we parse first."""
    content = (
        "Solve the following math problem step by step. "
        'At the end, write your final answer as "The answer is <number>."\n\n'
        f"Question: {item.question.strip()}"
    )
    return [{"role": "user", "content": content}]


def score_item(
    item: MMLUItem | GSM8KItem, reply: str | None, error: str | None = None, finish_reason: str | None = None,
    completion_tokens: int | None = None, latency_s: float | None = None,
) -> ItemResult:
    """Score one reply (None for a failed request, which is wrong) against its item."""
    expected: str | float
    extracted: str | float | None
    if isinstance(item, MMLUItem):
        subject, expected = item.subject, item.answer_letter
        extracted = extract_choice(reply, item.choices) if reply is not None else None
        correct = extracted == expected
        item_id = f"mmlu/{item.subject}/{item.index}"
    else:
        number = extract_number(reply) if reply is not None else None
        subject, expected, extracted = None, item.answer_number, number
        correct = numbers_match(number, item.answer_number)
        item_id = f"gsm8k/{item.index}"
    if reply is not None and len(reply) > REPLY_CHARS:
        # Keep both ends: the question's restatement at the start, the answer at the end.
        half = REPLY_CHARS // 2
        reply = f"{reply[:half]} [...] {reply[-half:]}"
    return ItemResult(item.index, item_id, subject, expected, extracted, correct, reply, error, finish_reason,
                      completion_tokens, latency_s)


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion; (0, 1) when there is no data."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # At 0/n and n/n the bound is exactly 0 or 1; say so rather than 0.9999999999999999.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= total else min(1.0, centre + half)
    return low, high


def per_subject(results: Sequence[ItemResult]) -> list[dict[str, Any]]:
    """One row per subject (sorted by name): n, correct, accuracy."""
    groups: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        groups[r.subject or "-"].append(r)
    rows = []
    for subject in sorted(groups):
        n, correct = len(groups[subject]), sum(r.correct for r in groups[subject])
        rows.append({"subject": subject, "n": n, "correct": correct, "accuracy": correct / n})
    return rows


def summarize(
    results: Sequence[ItemResult], config: BenchConfig, wall_time_s: float, model: str, data_source: str,
) -> dict[str, Any]:
    """Every figure of a run, its configuration and the per-item records (the JSON output)."""
    total, correct = len(results), sum(r.correct for r in results)
    low, high = wilson_interval(correct, total)
    failed = [r for r in results if r.error is not None]
    return {
        "dataset": config.dataset, "model": model, "data_source": data_source,
        "num_items": total, "num_correct": correct,
        "accuracy": correct / total if total else 0.0,
        "ci95_low": low, "ci95_high": high, "ci_method": "wilson",
        "extraction_failures": sum(1 for r in results if r.error is None and r.extracted is None),
        "request_failures": len(failed),
        "request_errors": sorted({r.error for r in failed if r.error})[:10],
        "truncated_replies": sum(1 for r in results if r.finish_reason == "length"),
        "wall_time_s": wall_time_s, "items_per_s": total / wall_time_s if wall_time_s > 0 else 0.0,
        "per_subject": per_subject(results) if config.dataset == "mmlu" else [],
        "config": asdict(config),
        "items": [asdict(r) for r in results],
    }


def format_report(summary: dict[str, Any]) -> str:
    """The human-readable report of :func:`summarize`'s dict."""
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [
        f"{summary['dataset'].upper()} accuracy of {summary['model']} ({summary['data_source']})",
        f"  accuracy          {pct(summary['accuracy'])}  ({summary['num_correct']}/{summary['num_items']}), "
        f"95% CI [{pct(summary['ci95_low'])}, {pct(summary['ci95_high'])}] (Wilson)",
        f"  no answer found   {summary['extraction_failures']}  (scored wrong)",
        f"  request failures  {summary['request_failures']}  (scored wrong)",
        f"  hit max_tokens    {summary['truncated_replies']}",
        f"  wall time         {summary['wall_time_s']:.1f} s  ({summary['items_per_s']:.2f} items/s)",
    ]
    if summary["dataset"] == "mmlu":
        lines.append("  (chance is 25%)")
    for error in summary["request_errors"][:3]:
        lines.append(f"  error: {error}")
    if summary["per_subject"]:
        width = max(len("subject"), *(len(row["subject"]) for row in summary["per_subject"]))
        lines += ["", f"{'subject':<{width}}  {'n':>5}  {'correct':>7}  {'accuracy':>8}"]
        for row in summary["per_subject"]:
            lines.append(f"{row['subject']:<{width}}  {row['n']:>5}  {row['correct']:>7}  {pct(row['accuracy']):>8}")
    return "\n".join(lines)


# ---- talking to the server -------------------------------------------------------------------


def normalize_base_url(url: str) -> str:
    """``http://host:8000``, whether given with a trailing ``/`` or ``/v1``."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


async def first_model_id(session: aiohttp.ClientSession, base_url: str) -> str:
    """The first model id that GET /v1/models lists."""
    try:
        async with session.get(f"{base_url}/v1/models", timeout=aiohttp.ClientTimeout(total=30)) as resp:
            resp.raise_for_status()
            data = (await resp.json())["data"]
    except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as exc:
        raise BenchError(f"cannot list models at {base_url}/v1/models ({type(exc).__name__}: {exc}); "
                         "is the server running? start it with: python -m engine_core") from exc
    if not data:
        raise BenchError(f"{base_url}/v1/models lists no model; pass --model")
    return data[0]["id"]


async def chat_completion(
    session: aiohttp.ClientSession, base_url: str, model: str, messages: list[dict[str, str]],
    max_tokens: int | None, timeout_s: float,
) -> tuple[str, str | None, int | None]:
    """(reply, finish_reason, completion tokens) of one greedy chat completion; RuntimeError (one line) if it fails."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": False}
    try:
        async with session.post(f"{base_url}/v1/chat/completions", json=body,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {_error_message(text)}")
            data = json.loads(text)
        choice, usage = data["choices"][0], data.get("usage") or {}
        return choice["message"]["content"] or "", choice.get("finish_reason"), usage.get("completion_tokens")
    except asyncio.TimeoutError as exc:
        raise RuntimeError(f"timed out after {timeout_s:g} s") from exc
    except aiohttp.ClientError as exc:
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeError(f"malformed response: {type(exc).__name__}: {exc}") from exc


def _error_message(body: str) -> str:
    """OpenAI's ``{"error": {"message": ...}}`` if that is what the server sent, else the body."""
    try:
        return str(json.loads(body)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return body.strip()[:300] or "(empty body)"


async def run_items(
    items: Sequence[MMLUItem | GSM8KItem], config: BenchConfig, model: str, session: aiohttp.ClientSession,
) -> list[ItemResult]:
    """Send every item (at most ``config.concurrency`` at once); results in item order."""
    semaphore = asyncio.Semaphore(config.concurrency)

    def make_messages(item: MMLUItem | GSM8KItem) -> list[dict[str, str]]:
        return mmlu_messages(item) if isinstance(item, MMLUItem) else gsm8k_messages(item)

    async def one(item: MMLUItem | GSM8KItem) -> ItemResult:
        async with semaphore:
            start = time.perf_counter()
            try:
                reply, reason, tokens = await chat_completion(
                    session, config.base_url, model, make_messages(item), config.max_tokens, config.timeout_s)
            except RuntimeError as exc:
                return score_item(item, None, error=str(exc), latency_s=time.perf_counter() - start)
            return score_item(item, reply, None, reason, tokens, time.perf_counter() - start)

    tasks = [asyncio.ensure_future(one(item)) for item in items]
    failures = 0
    with tqdm(total=len(tasks), desc=config.dataset, unit="item", disable=not config.progress) as bar:
        for finished in asyncio.as_completed(tasks):
            if (await finished).error is not None:
                failures += 1
                bar.set_postfix_str(f"request failures: {failures}")
            bar.update(1)
    return [t.result() for t in tasks]


def load_items(config: BenchConfig) -> tuple[list[MMLUItem] | list[GSM8KItem], str]:
    """The seeded sample of the configured dataset, and where the data came from."""
    if config.dataset == "mmlu":
        split = load_mmlu(config.source)
        return sample_mmlu(split, config.num_samples, config.seed, config.subjects), split.source
    if config.subjects:
        raise DatasetError("--subjects applies to MMLU only")
    gsm8k = load_gsm8k(config.source)
    return sample_items(gsm8k, config.num_samples, config.seed), gsm8k.source


async def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Load, sample, query the server, score; returns (and writes, if asked) the summary dict."""
    config = config.resolved()
    items, data_source = load_items(config)
    connector = aiohttp.TCPConnector(limit=config.concurrency)
    async with aiohttp.ClientSession(headers=auth_headers(), connector=connector) as session:
        model = config.model or await first_model_id(session, config.base_url)
        log.info("%d %s items, model %s at %s, concurrency %d, max_tokens %d", len(items), config.dataset,
                 model, config.base_url, config.concurrency, config.max_tokens)
        start = time.perf_counter()
        results = await run_items(items, config, model, session)
        wall = time.perf_counter() - start
    summary = summarize(results, config, wall, model, data_source)
    if config.output_json:
        path = Path(config.output_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.bench_accuracy",
                                description="Accuracy of an OpenAI-compatible server on MMLU or GSM8K.")
    p.add_argument("--dataset", choices=sorted(DEFAULT_NUM_SAMPLES), default="mmlu", help="default mmlu")
    p.add_argument("--num-samples", type=int, default=None,
                   help="items to sample (default: 200 for mmlu, 100 for gsm8k; 0: the whole test set)")
    p.add_argument("--subjects", default="", help="MMLU only: comma-separated subjects, e.g. abstract_algebra,anatomy")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default 8)")
    p.add_argument("--host", default="127.0.0.1", help="server host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="server port (default 8000)")
    p.add_argument("--base-url", default=None, help="e.g. http://localhost:8000 (overrides --host/--port)")
    p.add_argument("--model", default=None, help="model name to send (default: the first of GET /v1/models)")
    p.add_argument("--max-tokens", type=int, default=None, help="default: 32 for mmlu, 256 for gsm8k")
    p.add_argument("--source", choices=SOURCES, default="auto",
                   help="data source: the hub, the pinned local files, or auto (the hub if reachable)")
    p.add_argument("--offline", action="store_true", help="same as --source local")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    p.add_argument("--output-json", default=None, help="write every figure and per-item record here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The config of parsed arguments; ValueError for values no run could use."""
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, not {args.concurrency}")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, not {args.max_tokens}")
    return BenchConfig(
        dataset=args.dataset, num_samples=args.num_samples,
        subjects=tuple(s.strip() for s in args.subjects.split(",") if s.strip()),
        concurrency=args.concurrency, seed=args.seed,
        base_url=args.base_url or f"http://{args.host}:{args.port}",
        model=args.model, max_tokens=args.max_tokens, source="local" if args.offline else args.source,
        timeout_s=args.timeout, output_json=args.output_json, progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line; returns the exit status (2 for a usage or data problem)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = config_from_args(args)
        summary = asyncio.run(run_benchmark(config))
    except (ValueError, DatasetError, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, BenchError) else 2
    print(format_report(summary))
    if config.output_json:
        print(f"\nwrote {config.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
