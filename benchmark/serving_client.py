"""The benchmark's network side: streaming chat requests and closed-loop clients (aiohttp).

One request is a streaming ``POST /v1/chat/completions`` with ``stream_options.include_usage``,
greedy (``temperature`` 0), ``max_tokens`` set to the request's output length and, by default,
vLLM's ``ignore_eos`` so that the output has exactly that length. Timing, per request:

* TTFT: from just before the POST to the first chunk whose delta has content.
* latency: to the end of the stream (``data: [DONE]``).
* inter-token latencies: the gaps between consecutive content chunks. A server may put several
  tokens in one chunk (the detokenizer holds back half a character, or it flushes in batches);
  then ``usage.completion_tokens`` exceeds the chunk count and each gap is divided by the
  average tokens a chunk carried after the first, ``(tokens - 1) / (chunks - 1)``.
* output tokens: ``usage.completion_tokens``, or the number of content chunks when the server
  sends no usage.

Every way a request can go wrong (an HTTP error status, an ``error`` event in the stream, a
stream that ends without ``[DONE]`` or without content, a timeout, a connection error) gives a
failed :class:`RequestResult` with a one-line reason; nothing is dropped.

Closed loop: at concurrency C, C workers each send a request, wait for it to finish, and take
the next one, until the list is done. Requests start in list order.

Server counters: :func:`fetch_metrics` reads the server's Prometheus ``/metrics`` text, or
``None`` when the server has none (any OpenAI-compatible server may lack it): the benchmark
then reports no counters, and that is not an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .serving_workloads import ServingRequest


@dataclass
class RequestResult:
    """What one request measured. Times are seconds; ``start`` is on the ``perf_counter`` clock."""

    ok: bool
    error: str | None = None
    start: float = 0.0
    ttft: float | None = None
    latency: float | None = None
    itls: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    expected_output_tokens: int | None = None
    chunks: int = 0

    @property
    def tpot(self) -> float | None:
        if not self.ok or self.ttft is None or self.latency is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


def auth_headers() -> dict[str, str]:
    """The ``Authorization`` header for a server started with ``--api-key``, from ``OPENAI_API_KEY``
    (the variable OpenAI's own clients read); none when it is unset."""
    key = os.environ.get("OPENAI_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def chat_payload(model: str, request: ServingRequest, ignore_eos: bool) -> dict[str, Any]:
    """The JSON body of one benchmark request."""
    return {
        "model": model,
        "messages": request.messages(),
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        "max_tokens": request.output_len,
        "ignore_eos": ignore_eos,
    }


def _error_message(body: str) -> str:
    """The ``error.message`` of an OpenAI error body, else the body's first line."""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return str(data["error"].get("message") or data["error"])
        if isinstance(data, dict) and "detail" in data:  # FastAPI's own errors
            return str(data["detail"])
    except ValueError:
        pass
    return (body.strip().splitlines() or ["(empty body)"])[0][:300]


def _delta_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    # Reasoning models stream their thinking first; it is output all the same.
    return (delta.get("content") or "") + (delta.get("reasoning_content") or "")


def spread_itls(gaps: list[float], tokens: int, chunks: int) -> list[float]:
    """Inter-chunk gaps turned into per-token latencies when chunks carry several tokens."""
    if chunks < 2 or tokens <= chunks:
        return gaps
    per_chunk = (tokens - 1) / (chunks - 1)
    return [gap / per_chunk for gap in gaps]


async def send_request(
    session: aiohttp.ClientSession, url: str, model: str, request: ServingRequest,
    timeout: float, ignore_eos: bool = True,
) -> RequestResult:
    """Send one streaming chat request and measure it; never raises for a failed request."""
    start = time.perf_counter()
    result = RequestResult(ok=False, start=start, expected_output_tokens=request.output_len)
    chunk_times: list[float] = []
    usage: dict[str, Any] | None = None
    done = False
    try:
        async with session.post(
            url, json=chat_payload(model, request, ignore_eos), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            if resp.status != 200:
                result.error = f"HTTP {resp.status}: {_error_message(await resp.text())}"
                return result
            async for raw in resp.content:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" lines
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                try:
                    chunk = json.loads(data)
                except ValueError:
                    result.error = f"malformed stream chunk: {data[:100]!r}"
                    return result
                if not isinstance(chunk, dict):
                    result.error = f"malformed stream chunk: {data[:100]!r}"
                    return result
                if chunk.get("error"):
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else error
                    result.error = f"stream error: {message}"
                    return result
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if _delta_text(chunk):
                    chunk_times.append(now)
        end = time.perf_counter()
    except asyncio.TimeoutError:
        result.error = f"timeout after {timeout:g} s"
        return result
    except aiohttp.ClientError as err:
        result.error = f"connection error: {type(err).__name__}: {str(err)[:200]}"
        return result
    except ValueError as err:  # aiohttp: a line longer than the read buffer
        result.error = f"bad stream: {str(err)[:200]}"
        return result
    if not done:
        result.error = "stream ended without [DONE]"
        return result
    if not chunk_times:
        result.error = "no content in the response"
        return result
    usage = usage or {}
    tokens = int(usage["completion_tokens"]) if usage.get("completion_tokens") is not None else len(chunk_times)
    result.ok = True
    result.ttft = chunk_times[0] - start
    result.latency = end - start
    result.chunks = len(chunk_times)
    result.output_tokens = tokens
    result.prompt_tokens = int(usage["prompt_tokens"]) if usage.get("prompt_tokens") is not None else None
    gaps = [b - a for a, b in zip(chunk_times, chunk_times[1:])]
    result.itls = spread_itls(gaps, tokens, len(chunk_times))
    return result


@dataclass
class LevelRun:
    """The results of one concurrency level, in request order, and its wall-clock span."""

    concurrency: int
    results: list[RequestResult]
    wall_time: float
    started_at: float  # time.time(), for the report's timestamps
    finished_at: float


async def run_level(
    session: aiohttp.ClientSession, url: str, model: str, requests: Sequence[ServingRequest], concurrency: int,
    timeout: float, ignore_eos: bool = True, on_done: Callable[[RequestResult], None] | None = None,
) -> LevelRun:
    """Closed loop: ``concurrency`` workers send ``requests`` in order until all are done."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    results: list[RequestResult | None] = [None] * len(requests)
    next_index = 0  # shared by the workers; safe without a lock on one event loop

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(requests):
            i = next_index
            next_index += 1
            try:
                result = await send_request(session, url, model, requests[i], timeout, ignore_eos)
            except Exception as err:  # a client bug must cost one request, not the whole level
                result = RequestResult(ok=False, error=f"client error: {type(err).__name__}: {err}")
            results[i] = result
            if on_done is not None:
                on_done(result)

    started_at, start = time.time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
    wall = time.perf_counter() - start
    return LevelRun(concurrency, [r for r in results if r is not None], wall, started_at, time.time())


async def fetch_models(session: aiohttp.ClientSession, base_url: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The entries of ``GET /v1/models``; raises ``RuntimeError`` with a one-line reason."""
    try:
        async with session.get(f"{base_url}/v1/models", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"GET {base_url}/v1/models: HTTP {resp.status}: {_error_message(body)}")
            data = json.loads(body).get("data") or []
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        raise RuntimeError(f"cannot reach the server at {base_url}: {type(err).__name__}: {err}") from err
    except ValueError as err:
        raise RuntimeError(f"GET {base_url}/v1/models did not return JSON") from err
    if not data:
        raise RuntimeError(f"GET {base_url}/v1/models lists no models")
    return data


async def fetch_metrics(session: aiohttp.ClientSession, base_url: str, timeout: float = 10.0) -> str | None:
    """The server's Prometheus text exposition (``GET /metrics``), or None when it has none to give."""
    try:
        async with session.get(f"{base_url}/metrics", timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return None
            return await resp.text()
    except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError):
        return None
