"""The serving benchmark: lengths, prompts and workloads, datasets, statistics and the report,
the client, and one live run, in that order.

Everything but the last test runs without the engine: the client is checked against a small
aiohttp server that fakes the OpenAI streaming API (including its failure modes), in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import statistics
import threading
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from benchmark import bench_serving, serving_data
from benchmark.serving_client import RequestResult, run_level, send_request, spread_itls
from benchmark.serving_data import TextFitter, iter_json_array, load_prompt_texts, load_sharegpt, synthetic_texts
from benchmark.serving_report import (COUNTERS, build_report, counter_deltas, format_table, parse_counters, percentile,
                                      plot_report, slo_attainment, summarize_by_kind, summarize_level)
from benchmark.serving_workloads import (ServingRequest, WorkloadSpec, build_requests, length_range,
                                         long_prompt_len, max_output_len, sample_lengths, shared_prefix_groups,
                                         shared_prefix_len)
from engine_core.config import default_cache_dir
from engine_core.models import bundled

LEVEL_FIGURES = [f"{m}_p{q}_ms" for m in ("ttft", "latency", "tpot", "itl") for q in (50, 99)] + [
    "output_throughput_tok_s", "request_throughput_req_s", "successes", "failures"]
COUNTER_FIGURES = [*COUNTERS, "prefix_cache_hit_rate", "spec_accept_length"]


@pytest.fixture(scope="module")
def fitter() -> TextFitter:
    from transformers import AutoTokenizer

    return TextFitter(AutoTokenizer.from_pretrained(bundled.converted_dir(default_cache_dir())))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return synthetic_texts(400, seed=0)



def test_randomness_one_gives_exact_targets():
    assert sample_lengths(1024, 1.0, 500, random.Random(0)) == [1024] * 500
    assert sample_lengths(1, 1.0, 5, random.Random(0)) == [1] * 5
    for target, r in [(0, 1.0), (10, 1.5), (10, -0.1)]:
        with pytest.raises(ValueError):
            length_range(target, r)


def test_randomness_zero_is_uniform_from_one_to_target():
    lengths = sample_lengths(1000, 0.0, 4000, random.Random(1))
    assert min(lengths) >= 1 and max(lengths) <= 1000
    assert min(lengths) <= 10 and max(lengths) >= 990
    # The mean of 4000 uniform draws has a standard deviation of about 4.6 here.
    assert abs(statistics.mean(lengths) - 500.5) < 25
    # Roughly flat: each quarter of the range gets about a quarter of the draws.
    quarters = [sum(1 for x in lengths if q * 250 < x <= (q + 1) * 250) for q in range(4)]
    assert all(850 < count < 1150 for count in quarters), quarters
    # r=0.5: the upper half.
    lengths = sample_lengths(1000, 0.5, 3000, random.Random(2))
    assert min(lengths) >= 500 and max(lengths) <= 1000
    assert min(lengths) <= 505 and max(lengths) >= 995
    assert length_range(1024, 0.5) == (512, 1024)
    assert length_range(10, 0.25) == (2, 10)  # round(2.5) with round-half-even
    assert length_range(3, 0.0) == (1, 3)
    # Same seed, same lengths.
    assert sample_lengths(512, 0.3, 200, random.Random(7)) == sample_lengths(512, 0.3, 200, random.Random(7))
    assert sample_lengths(512, 0.3, 200, random.Random(7)) != sample_lengths(512, 0.3, 200, random.Random(8))



def test_fit_gives_exact_token_counts(fitter, texts):
    for target in [1, 2, 17, 300, 1500]:
        for i in range(40):
            assert fitter.count(fitter.fit(texts[i], target, texts[i + 1:])) == target
    long_text = "The quick brown fox jumps over the lazy dog. " * 50
    assert long_text.startswith(fitter.fit(long_text, 20))
    padded = fitter.fit("Hello there.", 30, ["Second text here.", "Third one. " * 20])
    assert padded.startswith("Hello there.\n\nSecond text here.") and fitter.count(padded) == 30
    assert fitter.fit("Short.", 50, []) == "Short."  # nothing to pad with: as long as it gets


@pytest.mark.parametrize("workload", ["default", "shared-prefix", "long-prompt-mix"])
@pytest.mark.parametrize("randomness", [1.0, 0.5])
def test_prompts_have_exactly_their_token_counts(fitter, texts, workload, randomness):
    spec = WorkloadSpec(workload, num_requests=40, input_len=256, output_len=64, randomness=randomness, seed=3)
    requests = build_requests(spec, texts, fitter)
    assert len(requests) == 40
    for request in requests:
        assert fitter.count(request.prompt) == request.input_len
        assert 32 <= request.output_len <= 64 if randomness == 0.5 else request.output_len == 64
    if workload == "default":  # the others have lengths of their own (tested below)
        assert {r.input_len for r in requests} <= set(range(length_range(256, randomness)[0], 257))


@pytest.mark.parametrize("workload", ["default", "shared-prefix", "long-prompt-mix", "repetitive"])
def test_same_seed_same_requests(fitter, texts, workload):
    tokenizer = fitter.tokenizer
    spec = WorkloadSpec(workload, num_requests=24, input_len=128, output_len=32, randomness=0.3, seed=11)
    # A fresh fitter each time: nothing may carry over from one build to the next.
    first = build_requests(spec, list(texts), TextFitter(tokenizer), level=1)
    assert build_requests(spec, list(texts), TextFitter(tokenizer), level=1) == first
    other_seed = WorkloadSpec(workload, num_requests=24, input_len=128, output_len=32, randomness=0.3, seed=12)
    assert build_requests(other_seed, list(texts), TextFitter(tokenizer), level=1) != first
    # Each concurrency level has its own prompts, so a prefix cache cannot reuse the previous level's.
    assert build_requests(spec, list(texts), TextFitter(tokenizer), level=2) != first
    assert load_prompt_texts("random", 50, seed=5) == load_prompt_texts("random", 50, seed=5)


def test_shared_prefix_groups_share_their_prefix_tokens(fitter, texts):
    spec = WorkloadSpec("shared-prefix", num_requests=40, input_len=400, output_len=16, randomness=0.5)
    requests = build_requests(spec, texts, fitter)
    groups, prefix_len = shared_prefix_groups(40), shared_prefix_len(400)
    assert groups == 8 and prefix_len == 300
    assert [r.group for r in requests] == [i % groups for i in range(40)]  # interleaved arrivals
    prefixes = {}
    for request in requests:
        ids = fitter.encode(request.prompt)
        assert len(ids) > prefix_len
        prefixes.setdefault(request.group, set()).add(tuple(ids[:prefix_len]))
    assert all(len(p) == 1 for p in prefixes.values()), "a group's requests differ within the prefix"
    assert len({next(iter(p)) for p in prefixes.values()}) == groups, "two groups share a prefix"
    assert len({r.prompt for r in requests}) == 40, "the questions are not distinct"


def test_long_prompt_mix_has_five_percent_long_prompts(fitter, texts):
    spec = WorkloadSpec("long-prompt-mix", num_requests=100, input_len=128, output_len=16)
    requests = build_requests(spec, texts, fitter)
    long = [i for i, r in enumerate(requests) if r.kind == "long"]
    assert len(long) == 5
    assert all(requests[i].input_len == 4 * 128 for i in long)
    assert all(r.input_len == 128 // 8 for r in requests if r.kind == "short")
    assert long[0] > 0 and long[-1] < 99 and min(b - a for a, b in zip(long, long[1:])) >= 15  # spread out
    assert long_prompt_len(1024, max_input_len=3000) == 3000  # the server's context caps it
    tiny = build_requests(WorkloadSpec("long-prompt-mix", num_requests=4, input_len=64, output_len=4), texts, fitter)
    assert sum(r.kind == "long" for r in tiny) == 1  # at least one


def test_repetitive_prompts_contain_the_text_to_copy(fitter):
    spec = WorkloadSpec("repetitive", num_requests=30, input_len=300, output_len=300)
    for request in build_requests(spec, [], fitter):
        assert request.copy_text and request.copy_text in request.prompt
        assert len(request.copy_text) > 0.6 * len(request.prompt)
        old, new = request.prompt.rsplit("changing ", 1)[1].rstrip(".").split(" to ")
        assert old in request.copy_text and new not in request.copy_text
        assert abs(fitter.count(request.prompt) - 300) <= 1 and request.input_len == fitter.count(request.prompt)



def test_output_slack_asks_for_more_tokens_than_the_length(fitter, texts):
    assert [max_output_len(n, 1.5) for n in (1, 10, 32)] == [2, 15, 48]
    assert max_output_len(10, 1.1) == 11 and max_output_len(7, 1.0) == 7  # no float rounding up
    spec = WorkloadSpec(num_requests=20, input_len=16, output_len=32, randomness=0.5, output_slack=1.5)
    exact = build_requests(WorkloadSpec(num_requests=20, input_len=16, output_len=32, randomness=0.5), texts, fitter)
    slack = build_requests(spec, texts, fitter)
    assert [r.output_len for r in slack] == [max_output_len(r.output_len, 1.5) for r in exact]
    with pytest.raises(ValueError, match="at least 1"):
        max_output_len(10, 0.9)


def test_truncated_json_array_stops_at_the_incomplete_element(tmp_path):
    path = tmp_path / "cut.json"
    turns = [[{"from": "human", "value": f"q{i} " * 300}, {"from": "gpt", "value": "a"}] for i in range(5)]
    text = json.dumps([{"conversations": t} for t in turns], indent=2)
    path.write_text(text[: text.index('"q4')])
    assert len(list(iter_json_array(path))) == 4
    assert load_sharegpt(10, path) == [f"q{i} " * 299 + f"q{i}" for i in range(4)]


def test_sharegpt_loads_offline_from_the_truncated_package_file(fitter):
    try:
        path = serving_data.sharegpt_path()
    except FileNotFoundError as err:
        pytest.skip(f"{err} (the ShareGPT fallback is then unavailable)")
    start = time.perf_counter()
    prompts = load_sharegpt(2000)
    assert len(prompts) == 2000 and all(p.strip() for p in prompts)
    assert time.perf_counter() - start < 5, "reading 2000 prompts should not parse the whole file"
    conversations = list(iter_json_array(path))
    usable = load_sharegpt(100_000, path)
    assert 17_000 < len(conversations) < 18_500 and 10_500 < len(usable) < 11_800
    for request in build_requests(WorkloadSpec(num_requests=60, input_len=512, output_len=8), prompts, fitter):
        assert fitter.count(request.prompt) == request.input_len == 512


def test_offline_hub_falls_back_at_once(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="benchmark.serving_data"):
        start = time.perf_counter()
        texts, used = load_prompt_texts("wildchat", 20, seed=0)
    assert time.perf_counter() - start < 5
    assert used in ("sharegpt", "random") and len(texts) == 20
    assert any("HF_HUB_OFFLINE" in record.message for record in caplog.records)



def _ok(ttft: float, latency: float, tokens: int) -> RequestResult:
    gap = (latency - ttft) / (tokens - 1)
    return RequestResult(ok=True, ttft=ttft, latency=latency, itls=[gap] * (tokens - 1), output_tokens=tokens)


def test_statistics_count_failures_and_compute_every_figure():
    assert [percentile(list(range(1, 101)), q) for q in (50, 99)] == pytest.approx([50.5, 99.01])
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None
    results = [_ok(0.1, 1.1, 11), _ok(0.3, 2.3, 11), RequestResult(ok=False, error="HTTP 400: too long"),
               RequestResult(ok=False, error="HTTP 400: too long"), RequestResult(ok=False, error="timeout after 5 s")]
    level = summarize_level(4, results, wall_time=2.0)
    assert (level["successes"], level["failures"], level["num_requests"]) == (2, 3, 5)
    assert level["failure_reasons"] == {"HTTP 400: too long": 2, "timeout after 5 s": 1}
    assert level["output_throughput_tok_s"] == pytest.approx(22 / 2.0)
    assert level["request_throughput_req_s"] == pytest.approx(1.0)
    assert level["ttft_p50_ms"] == pytest.approx(200.0)
    assert level["tpot_p50_ms"] == pytest.approx(150.0)  # (1.0/10 + 2.0/10) / 2 s
    assert level["itl_p99_ms"] == pytest.approx(200.0)
    assert all(level[key] is not None for key in LEVEL_FIGURES)
    empty = summarize_level(1, [RequestResult(ok=False, error="connection error")], wall_time=1.0)
    assert empty["failures"] == 1 and empty["ttft_p50_ms"] is None
    by_kind = summarize_by_kind(4, results, ["long", "short", "short", "long", "short"], 2.0)
    assert by_kind["long"]["successes"] == 1 and by_kind["short"]["failures"] == 2


def test_slo_attainment_counts_requests_within_every_target_and_failures_as_misses():
    one_token = RequestResult(ok=True, ttft=0.2, latency=0.2, output_tokens=1)
    results = [_ok(0.1, 1.1, 11), _ok(0.3, 2.3, 11), _ok(0.1, 4.1, 11), one_token,
               RequestResult(ok=False, error="timeout after 5 s")]
    # TTFT 100/300/100/200 ms, TPOT 100/200/400 ms and none (one token); the failure misses both.
    assert slo_attainment(results, ttft_slo_ms=250) == pytest.approx(3 / 5)
    assert slo_attainment(results, tpot_slo_ms=250) == pytest.approx(3 / 5)  # a one-token request meets it
    assert slo_attainment(results, ttft_slo_ms=250, tpot_slo_ms=250) == pytest.approx(2 / 5)
    assert slo_attainment(results) is None and slo_attainment([], ttft_slo_ms=1) is None
    level = summarize_level(4, results, 2.0, ttft_slo_ms=250, tpot_slo_ms=250)
    assert level["slo_attainment"] == pytest.approx(0.4) and "SLO met" in format_table([level])
    assert summarize_level(4, results, 2.0)["slo_attainment"] is None and "SLO met" not in format_table([
        summarize_level(4, results, 2.0)])
    by_kind = summarize_by_kind(4, results, ["short"] * 4 + ["long"], 2.0, 250, 250)
    assert by_kind["short"]["slo_attainment"] == 0.5 and by_kind["long"]["slo_attainment"] == 0


def test_table_json_and_plot(tmp_path):
    levels = [summarize_level(c, [_ok(0.1 * c, 1.0 + c, 11)], 2.0) for c in (1, 2, 4)]
    levels.append(summarize_level(16, [_ok(0.5, 3.0, 11), RequestResult(ok=False, error="boom")], 3.0))
    table = format_table(levels)
    rows = table.splitlines()[:6]
    assert len({len(row) for row in rows}) == 1, table  # aligned
    assert "TTFT p50" in rows[0] and "concurrency 16: 1 x boom" in table
    report = build_report({"args": {"seed": 0}}, levels)
    assert json.loads(json.dumps(report))["levels"][2]["concurrency"] == 4 and report["total_failures"] == 1
    path = plot_report(levels, tmp_path / "sub" / "plot.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # ITLs of chunks that carry several tokens are divided among them.
    assert spread_itls([0.2, 0.2], tokens=3, chunks=3) == [0.2, 0.2]
    assert spread_itls([0.2, 0.2, 0.2], tokens=7, chunks=4) == pytest.approx([0.1, 0.1, 0.1])



def test_server_counters_are_parsed_and_differenced():
    exposition = "\n".join([
        "# HELP engine_num_preemptions_total Sequences preempted.", "# TYPE engine_num_preemptions_total counter",
        "engine_num_preemptions_total 3.0", "engine_num_preemptions_created 1.7e+09",
        'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 40.0',  # vLLM's name, summed over labels
        'vllm:prefix_cache_hits_total{engine="1",model_name="m"} 24.0',
        "engine_prefix_cache_queries_total 128", "engine_spec_decode_num_drafts_total 10",
        "engine_spec_decode_num_accepted_tokens_total 25", "engine_kv_blocks_used 7",
    ])
    after = parse_counters(exposition)
    assert after == {"num_preemptions": 3, "prefix_cache_hit_tokens": 64, "prefix_cache_query_tokens": 128,
                     "spec_num_drafts": 10, "spec_num_accepted_tokens": 25}
    before = {"num_preemptions": 1.0, "prefix_cache_hit_tokens": 0.0, "prefix_cache_query_tokens": 0.0,
              "spec_num_drafts": 0.0, "spec_num_accepted_tokens": 0.0}
    deltas = counter_deltas(before, after)
    assert deltas["num_preemptions"] == 2 and isinstance(deltas["num_preemptions"], int)
    assert deltas["prefix_cache_hit_rate"] == pytest.approx(0.5)
    assert deltas["spec_accept_length"] == pytest.approx(3.5)  # 1 + 25 / 10 tokens per verify step
    assert deltas["spec_num_draft_tokens"] is None  # not exported: no figure, and no error
    assert all(v is None for v in counter_deltas({}, {}).values())
    assert counter_deltas(after, after)["spec_accept_length"] is None  # no drafts in the level


def _fake_app(state: dict[str, Any]) -> web.Application:
    """Streams one token per chunk; the user message picks a failure mode or multi-token chunks.

    ``/metrics`` exists only while ``state["metrics"]`` is set: every request then counts one
    preemption, one draft of 4 tokens with 2 accepted, and 16 prompt tokens of which 8 hit.
    """

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "max_model_len": 4096}]})

    async def metrics(_: web.Request) -> web.Response:
        if not state["metrics"]:
            raise web.HTTPNotFound()
        n = len(state["bodies"])
        return web.Response(text=(
            f"engine_num_preemptions_total {n}.0\nengine_prefix_cache_hits_total {8 * n}.0\n"
            f"engine_prefix_cache_queries_total {16 * n}.0\nengine_spec_decode_num_drafts_total {n}.0\n"
            f"engine_spec_decode_num_draft_tokens_total {4 * n}.0\n"
            f"engine_spec_decode_num_accepted_tokens_total {2 * n}.0\n"))

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state["bodies"].append(body)
        prompt, n = body["messages"][-1]["content"], body["max_tokens"]
        if "FAIL400" in prompt:
            return web.json_response({"error": {"message": "prompt too long", "type": "invalid"}}, status=400)
        # Only the closed-loop test's requests count: another test's timed-out request may linger.
        counted = prompt.startswith("LOOP")
        state["in_flight"] += counted
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(payload: Any) -> None:
            await resp.write(f"data: {json.dumps(payload)}\n\n".encode())

        try:
            await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            per_chunk = 2 if "MULTI" in prompt else 1
            for i in range(0, n, per_chunk):
                await asyncio.sleep(0.03 if "SLOW" in prompt else 0.005)
                if "STREAMERR" in prompt and i == 2:
                    await send({"error": {"message": "scheduler crashed", "type": "server_error"}})
                    break
                await send({"choices": [{"index": 0, "delta": {"content": " tok" * min(per_chunk, n - i)}}]})
            else:
                if "CUT" in prompt:
                    return resp  # ends without usage or [DONE]
                await send({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": n}})
            await resp.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            pass  # the client gave up (the timeout test)
        finally:
            state["in_flight"] -= counted
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture(scope="module")
def fake_server():
    """The fake server's base URL and state, served from its own thread and event loop."""
    state: dict[str, Any] = {"bodies": [], "in_flight": 0, "max_in_flight": 0, "metrics": False}
    loop, runner = asyncio.new_event_loop(), web.AppRunner(_fake_app(state))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", state
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _in_session(call: Any) -> Any:
    async def go() -> Any:
        async with aiohttp.ClientSession() as session:
            return await call(session)

    return asyncio.run(go())


def _send(url: str, prompt: str, output_len: int = 6, timeout: float = 10.0) -> RequestResult:
    return _in_session(lambda s: send_request(s, url, "fake", ServingRequest(prompt, 1, output_len), timeout))


def test_client_measures_a_streamed_request(fake_server):
    base, state = fake_server
    result = _send(f"{base}/v1/chat/completions", "hello", output_len=6)
    assert result.ok and result.error is None
    assert result.output_tokens == 6 and result.prompt_tokens == 9 and len(result.itls) == 5
    assert 0 < result.ttft < result.latency and result.tpot == pytest.approx((result.latency - result.ttft) / 5)
    body = state["bodies"][-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 6 and body["temperature"] == 0 and body["ignore_eos"] is True
    # Two tokens a chunk: the count comes from usage, not from the chunks.
    result = _send(f"{base}/v1/chat/completions", "MULTI", output_len=8)
    assert result.ok and result.chunks == 4 and result.output_tokens == 8 and len(result.itls) == 3


@pytest.mark.parametrize("prompt, reason", [
    ("FAIL400", "HTTP 400: prompt too long"),
    ("STREAMERR", "stream error: scheduler crashed"),
    ("CUT", "stream ended without [DONE]"),
    ("SLOW", "timeout after 0.1 s"),
    ("REFUSED", "connection error: ClientConnectorError"),
])
def test_client_reports_every_failure(fake_server, prompt, reason):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}" if prompt == "REFUSED" else fake_server[0]
    result = _send(f"{url}/v1/chat/completions", prompt, timeout=0.1 if prompt == "SLOW" else 10)
    assert not result.ok and result.error.startswith(reason) and result.tpot is None


def test_closed_loop_keeps_concurrency_clients_busy_and_counts_failures(fake_server):
    base, state = fake_server
    requests = [ServingRequest("FAIL400" if i == 3 else f"LOOP {i}", 1, 4) for i in range(9)]
    state["max_in_flight"] = 0
    run = _in_session(lambda s: run_level(s, f"{base}/v1/chat/completions", "fake", requests, 3, timeout=10))
    assert len(run.results) == 9 and state["max_in_flight"] == 3
    level = summarize_level(3, run.results, run.wall_time)
    assert level["successes"] == 8 and level["failures"] == 1
    assert level["failure_reasons"] == {"HTTP 400: prompt too long": 1}


def test_cli_against_the_fake_server(fake_server, tmp_path, capsys):
    base, state = fake_server
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    status = bench_serving.main([
        "--base-url", f"{base}/v1", "--tokenizer", "bundled", "--dataset", "random", "--input-len", "40",
        "--output-len", "5", "--concurrencies", "1,3", "--num-requests", "6", "--no-ignore-eos",
        "--output-json", str(out), "--plot", str(png),
    ])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["config"]["served_model"] == "fake" and report["config"]["dataset_used"] == "random"
    assert report["config"]["args"]["ignore_eos"] is False and state["bodies"][-1]["ignore_eos"] is False
    assert [level["concurrency"] for level in report["levels"]] == [1, 3]
    assert all(level["mean_target_input_tokens"] == 40 for level in report["levels"])
    assert png.stat().st_size > 0
    # This server has no /metrics (like many OpenAI-compatible servers): null counters, no column.
    assert all(level[key] is None for level in report["levels"] for key in COUNTER_FIGURES)
    assert "preempt" not in capsys.readouterr().out


def test_cli_reports_each_levels_server_counters(fake_server, tmp_path, capsys):
    base, state = fake_server
    out = tmp_path / "bench.json"
    state["metrics"] = True
    try:
        status = bench_serving.main([
            "--base-url", base, "--tokenizer", "bundled", "--dataset", "random", "--input-len", "20",
            "--output-len", "4", "--concurrencies", "1,2", "--num-requests", "3",
            "--output-json", str(out),
        ])
    finally:
        state["metrics"] = False
    assert status == 0
    levels = json.loads(out.read_text())["levels"]
    # Per level, not since the server started (the warm-up request came before the first level).
    assert [level["num_preemptions"] for level in levels] == [3, 3]
    assert all(level["prefix_cache_hit_tokens"] == 24 and level["prefix_cache_hit_rate"] == 0.5 for level in levels)
    assert all(level["spec_num_accepted_tokens"] == 6 and level["spec_accept_length"] == 3.0 for level in levels)
    table = capsys.readouterr().out
    assert "preempt" in table and "accept len" in table and "50.0%" in table


def test_slo_targets_add_the_attainment_to_the_table_and_the_json(fake_server, tmp_path, capsys):
    base, _ = fake_server
    out = tmp_path / "bench.json"
    argv = ["--base-url", base, "--tokenizer", "bundled", "--dataset", "random", "--input-len", "20",
            "--output-len", "4", "--concurrencies", "2", "--num-requests", "4"]
    # Targets no request can miss on a local fake server, then one that every request misses.
    assert bench_serving.main([*argv, "--ttft-slo-ms", "60000", "--tpot-slo-ms", "60000", "--output-json", str(out)]) == 0
    assert json.loads(out.read_text())["levels"][0]["slo_attainment"] == 1.0
    assert "SLO met" in capsys.readouterr().out
    assert bench_serving.main([*argv, "--ttft-slo-ms", "0.001", "--output-json", str(out)]) == 0
    assert json.loads(out.read_text())["levels"][0]["slo_attainment"] == 0.0
    assert " 0.0%" in capsys.readouterr().out
    assert bench_serving.main([*argv, "--output-json", str(out)]) == 0  # no target: no figure, no column
    assert json.loads(out.read_text())["levels"][0]["slo_attainment"] is None
    assert "SLO met" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_serving.parse_args([*argv, "--ttft-slo-ms", "-1"])
    assert "--ttft-slo-ms must be at least 0" in capsys.readouterr().err


def test_output_slack_sends_larger_max_tokens_without_ignore_eos(fake_server, tmp_path):
    base, state = fake_server
    argv = ["--base-url", base, "--tokenizer", "bundled", "--dataset", "random", "--input-len", "20",
            "--output-len", "6", "--concurrencies", "1", "--num-requests", "2"]
    assert bench_serving.main([*argv, "--output-slack", "1.5"]) == 0
    assert state["bodies"][-1]["max_tokens"] == 9 and state["bodies"][-1]["ignore_eos"] is False
    with pytest.raises(SystemExit):
        bench_serving.parse_args([*argv, "--output-slack", "1.5", "--ignore-eos"])
    with pytest.raises(SystemExit):
        bench_serving.parse_args([*argv, "--output-slack", "0.5"])
    assert bench_serving.parse_args(argv).ignore_eos is True



@pytest.mark.slow
def test_end_to_end_against_the_engine_server(engine, tmp_path, monkeypatch):
    from engine_core.loop import EngineLoop
    from engine_core.scheduler_loader import load_scheduler
    from engine_core.server import BackgroundServer, create_app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the default dataset falls back at once, offline
    out, png = tmp_path / "serving.json", tmp_path / "serving.png"
    loop = EngineLoop(engine, load_scheduler("a1", "solution"))
    loop.start()  # create_app leaves the loop to its caller
    try:
        with BackgroundServer(create_app(loop, "bundled")) as server:
            status = bench_serving.main([
                "--base-url", server.base_url, "--input-len", "32", "--output-len", "8",
                "--concurrencies", "1,2", "--num-requests", "4", "--output-json", str(out), "--plot", str(png),
            ])
    finally:
        loop.stop()
    assert status == 0
    report = json.loads(out.read_text())
    assert report["config"]["served_model"] == "bundled" and report["config"]["dataset_used"] in ("sharegpt", "random")
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        missing = [key for key in LEVEL_FIGURES if level.get(key) is None]
        assert not missing, f"concurrency {level['concurrency']} lacks {missing}"
        assert level["failures"] == 0 and level["successes"] == 4
        assert level["mean_output_tokens"] == 8  # ignore_eos: exactly the requested length
        # The server's counters, per level: a1 neither preempts, caches nor drafts, but every
        # prompt token is looked up (the hit rate's denominator).
        assert level["num_preemptions"] == 0 and level["spec_num_drafts"] == 0
        assert level["prefix_cache_query_tokens"] == level["total_prompt_tokens"] > 0
        assert level["prefix_cache_hit_rate"] == 0.0 and level["spec_accept_length"] is None
    assert png.read_bytes()[:4] == b"\x89PNG"
