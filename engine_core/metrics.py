"""Prometheus metrics of one server: load, KV usage, token counts and latencies.

Names follow vLLM's (with an ``engine_`` prefix instead of ``vllm:``) so that the dashboards
and benchmark scripts students find for vLLM read this server with a search-and-replace.

Each :class:`EngineMetrics` owns its own ``CollectorRegistry`` rather than using
prometheus_client's global default: tests start several servers in one process, and a global
registry would refuse the second set of metrics with the same names (and would mix numbers
of different servers). The gauges, and the counters the loop keeps (preemptions, prefix-cache
hits, speculative decoding), are read from ``loop.stats()`` when ``/metrics`` is scraped, so
nothing on the hot path updates them.

Latencies are measured on the server's event loop, when an output reaches the request's
handler: that is what a client sees, and it keeps all metrics work off the engine loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .loop import LoopStats

# vLLM's buckets, stretched at the top: a CPU run of a long prompt can take tens of seconds.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0)
ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0)

SUCCESS_REASONS = ("stop", "length")
FAILURE_REASONS = ("error", "abort", "overloaded")


# Counters the loop keeps (``LoopStats`` field, metric name without ``_total``, help).
LOOP_COUNTERS = (
    ("num_preemptions", "engine_num_preemptions", "Sequences preempted (their KV freed, to be recomputed)."),
    ("num_cached_tokens", "engine_prefix_cache_hits", "Prompt tokens whose KV was found in the prefix cache."),
    ("num_prompt_tokens", "engine_prefix_cache_queries", "Prompt tokens of all requests added."),
    ("num_drafts", "engine_spec_decode_num_drafts", "Scheduled sequences that carried draft tokens."),
    ("num_draft_tokens", "engine_spec_decode_num_draft_tokens", "Draft tokens scheduled for verification."),
    ("num_accepted_tokens", "engine_spec_decode_num_accepted_tokens", "Draft tokens accepted."),
    ("num_scheduler_failures", "engine_scheduler_failures",
     "Times a scheduler hook raised or broke an invariant: the requests in flight failed and it restarted."),
)


class _LoopCollector(Collector):
    """Gauges and counters that read the loop's state at scrape time (one ``stats()`` call per scrape)."""

    def __init__(self, stats: Callable[[], LoopStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._stats()
        yield GaugeMetricFamily("engine_num_requests_running", "Requests scheduled at least once.", s.num_running)
        yield GaugeMetricFamily("engine_num_requests_waiting", "Requests waiting to be scheduled.", s.num_waiting)
        yield GaugeMetricFamily("engine_kv_blocks_used", "KV cache blocks allocated.", s.kv_blocks_used)
        yield GaugeMetricFamily("engine_kv_blocks_total", "KV cache blocks in the pool.", s.kv_blocks_total)
        yield GaugeMetricFamily("engine_num_steps", "Engine steps run since start.", s.num_steps)
        for field_name, name, help_text in LOOP_COUNTERS:
            yield CounterMetricFamily(name, help_text, getattr(s, field_name))  # exposed as name + "_total"


class EngineMetrics:
    """All metrics of one server, in a registry of its own."""

    def __init__(self, stats: Callable[[], LoopStats]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_LoopCollector(stats))
        # prometheus_client appends ``_total`` to counter names in the exposition.
        self.prompt_tokens = Counter(
            "engine_prompt_tokens", "Prompt tokens processed (counted when the first output token arrives).",
            registry=self.registry,
        )
        self.generation_tokens = Counter("engine_generation_tokens", "Tokens generated.", registry=self.registry)
        self.time_to_first_token = Histogram(
            "engine_time_to_first_token_seconds", "Time from a request's arrival to its first output token.",
            buckets=TTFT_BUCKETS, registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "engine_inter_token_latency_seconds", "Time between consecutive output tokens of a request.",
            buckets=ITL_BUCKETS, registry=self.registry,
        )
        self.request_success = Counter(
            "engine_request_success", "Requests that finished normally, by finish_reason.",
            ["finish_reason"], registry=self.registry,
        )
        self.request_failure = Counter(
            "engine_request_failure",
            "Requests that did not finish normally: error (scheduler crash), abort (client left), overloaded (503).",
            ["finish_reason"], registry=self.registry,
        )
        # Pre-create the labelled series so that they read 0 (not absent) before the first event.
        for reason in SUCCESS_REASONS:
            self.request_success.labels(finish_reason=reason)
        for reason in FAILURE_REASONS:
            self.request_failure.labels(finish_reason=reason)

    def start_request(self) -> RequestTimer:
        return RequestTimer(self)

    def request_finished(self, reason: str) -> None:
        counter = self.request_success if reason in SUCCESS_REASONS else self.request_failure
        counter.labels(finish_reason=reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestTimer:
    """Latency bookkeeping of one request, fed with its outputs as they arrive."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics
        self._arrival = time.monotonic()
        self._last: float | None = None

    def on_tokens(self, num_new_tokens: int, num_prompt_tokens: int) -> None:
        if num_new_tokens <= 0:
            return
        now = time.monotonic()
        m = self._metrics
        if self._last is None:
            m.time_to_first_token.observe(now - self._arrival)
            m.prompt_tokens.inc(num_prompt_tokens)
        else:
            # Several tokens in one output (speculative decoding) share the gap evenly, so that
            # the histogram counts one observation per token.
            for _ in range(num_new_tokens):
                m.inter_token_latency.observe((now - self._last) / num_new_tokens)
        m.generation_tokens.inc(num_new_tokens)
        self._last = now
