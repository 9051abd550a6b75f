"""The OpenAI-compatible server, end to end: real servers on free ports, the official client.

Every test starts its own server (cheap: the engine is the session's) because one engine can
be driven by only one loop at a time, and tests need different schedulers and limits. The
``serve`` helper also checks that each test leaves no KV block allocated once it is idle.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from engine_core import Engine
from engine_core.loop import EngineLoop
from engine_core.scheduler_loader import load_scheduler
from engine_core.server import BackgroundServer, create_app

from .schedulers.crash_on_third_step import CrashOnThirdStepScheduler

MODEL = "test-model"
REPO = Path(__file__).resolve().parent.parent
IGNORE_EOS = {"ignore_eos": True}
QUESTION = [{"role": "user", "content": "Tell me a joke about cats."}]


@dataclass
class Served:
    url: str
    loop: EngineLoop
    client: openai.OpenAI
    http: httpx.Client


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextmanager
def serve(
    engine: Engine, scheduler: str = "a1", impl: str = "solution", max_pending_requests: int = 256,
    **app_options: object,
) -> Iterator[Served]:
    loop = EngineLoop(engine, load_scheduler(scheduler, impl), max_num_seqs=16)
    loop.start()
    leaked = 0
    try:
        with BackgroundServer(create_app(loop, MODEL, max_pending_requests, **app_options)) as server:  # type: ignore[arg-type]
            # No retries: a test that expects a 500 or 503 must see it, not a retried success.
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120)
            with httpx.Client(base_url=server.base_url, timeout=120) as http:
                yield Served(server.base_url, loop, client, http)
            _wait_until(lambda: loop.stats().num_running + loop.stats().num_waiting == 0)
    finally:
        loop.stop()
        leaked = engine.allocator.num_used
        if leaked:
            engine.allocator.reset()  # do not poison the tests that follow
    assert leaked == 0, f"{leaked} KV blocks still allocated after the test"


@pytest.fixture
def server(engine: Engine) -> Iterator[Served]:
    with serve(engine) as served:
        yield served


def chat_prompt_len(engine: Engine, messages: list[dict]) -> int:
    return len(engine.tokenizer.apply_chat_template(messages))


def assert_error_body(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_chat_non_streaming_and_streaming(server: Served, engine: Engine) -> None:
    prompt_len = chat_prompt_len(engine, QUESTION)
    full = server.client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2,
        extra_body=IGNORE_EOS,
    )
    assert full.object == "chat.completion" and full.id.startswith("chatcmpl-") and full.model == MODEL
    choice = full.choices[0]
    assert choice.finish_reason == "length" and choice.message.role == "assistant" and choice.message.content
    assert (full.usage.prompt_tokens, full.usage.completion_tokens, full.usage.total_tokens) == (
        prompt_len, 6, prompt_len + 6)
    assert len(choice.logprobs.content) == 6
    for item in choice.logprobs.content:
        assert item.logprob <= 0 and item.bytes == list(item.token.encode()) and len(item.top_logprobs) == 2

    chunks = list(server.client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=IGNORE_EOS,
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens == prompt_len

    # Content as a list of text parts is the same conversation.
    parts = [{"role": "user", "content": [{"type": "text", "text": QUESTION[0]["content"]}]}]
    short = server.client.chat.completions.create(model=MODEL, messages=parts, max_tokens=1, temperature=0)
    assert short.usage.prompt_tokens == prompt_len and short.usage.completion_tokens == 1


def test_completions(server: Served, engine: Engine) -> None:
    prompt = "The capital of France is"
    prompt_ids = engine.tokenizer.encode(prompt)
    full = server.client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=2, extra_body=IGNORE_EOS)
    assert full.object == "text_completion" and full.id.startswith("cmpl-")
    assert full.choices[0].finish_reason == "length" and full.choices[0].text
    assert (full.usage.prompt_tokens, full.usage.completion_tokens) == (len(prompt_ids), 6)
    lp = full.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    assert all(top[token] == value for top, token, value in zip(lp.top_logprobs, lp.tokens, lp.token_logprobs))
    # logprobs=0: no alternatives, but the sampled token's own entry, as in OpenAI's legacy API.
    lp0 = server.client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0.7, seed=1,
                                           logprobs=0).choices[0].logprobs
    assert lp0.top_logprobs == [{token: value} for token, value in zip(lp0.tokens, lp0.token_logprobs)]

    # The same prompt as token ids, streamed: the same greedy text.
    chunks = list(server.client.completions.create(
        model=MODEL, prompt=prompt_ids, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=IGNORE_EOS,
    ))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == len(prompt_ids)


def test_stop_string_ends_generation_and_is_not_returned(server: Served) -> None:
    free = server.client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=12, temperature=0, extra_body=IGNORE_EOS)
    text = free.choices[0].message.content
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    stopped = server.client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=12, temperature=0, stop=[stop], extra_body=IGNORE_EOS)
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[:text.index(stop)]
    assert stop not in stopped.choices[0].message.content


def test_concurrent_a1_streams_equal_each_alone_through_a0(engine: Engine) -> None:
    topics = ["the sea", "a dragon who bakes bread", "bicycles", "tea", "winter in a small mountain village",
              "robots", "the moon", "a lost key and the long search for it through an old house"]
    conversations = [[{"role": "user", "content": f"Write a few sentences about {t}."}] for t in topics]
    settings = dict(model=MODEL, max_tokens=24, temperature=0, extra_body=IGNORE_EOS)

    with serve(engine, "a0") as a0:
        alone = [a0.client.chat.completions.create(messages=m, **settings).choices[0].message.content
                 for m in conversations]

    def stream(client: openai.OpenAI, messages: list[dict]) -> str:
        chunks = client.chat.completions.create(messages=messages, stream=True, **settings)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with serve(engine, "a1") as a1, ThreadPoolExecutor(len(conversations)) as pool:
        together = list(pool.map(lambda m: stream(a1.client, m), conversations))
        steps = a1.loop.stats().num_steps
    assert together == alone
    assert steps < 24 * len(conversations) / 2, f"{steps} steps: the requests were not batched"


def test_client_disconnect_aborts_and_frees_blocks(server: Served, engine: Engine) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 500, "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=60) as http, \
            http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        events = (line for line in resp.iter_lines() if line.startswith("data:"))
        next(events), next(events)
        assert engine.allocator.num_used > 0
    assert _wait_until(lambda: engine.allocator.num_used == 0, 10), "the aborted stream kept its KV blocks"

    # A non-streaming request whose client gives up is aborted too.
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=server.url, timeout=1.0) as http:
        http.post("/v1/chat/completions", json={**body, "stream": False})
    assert _wait_until(lambda: engine.allocator.num_used == 0, 10), "the abandoned request kept its KV blocks"

    metrics = server.http.get("/metrics").text
    assert re.search(r"^engine_kv_blocks_used 0(\.0)?$", metrics, re.M)
    assert re.search(r'^engine_request_failure_total\{finish_reason="abort"\} 2(\.0)?$', metrics, re.M)


def test_malformed_requests_get_openai_errors(server: Served) -> None:
    chat = {"model": MODEL, "messages": QUESTION, "max_tokens": 1}
    cases = [
        ("invalid JSON", "/v1/chat/completions", b'{"model": ', 400, None),
        ("wrong type", "/v1/chat/completions", {**chat, "temperature": "hot"}, 400, "temperature"),
        ("missing messages", "/v1/chat/completions", {"model": MODEL}, 400, "messages"),
        ("n=2", "/v1/chat/completions", {**chat, "n": 2}, 400, "n"),
        ("negative temperature", "/v1/chat/completions", {**chat, "temperature": -1}, 400, "temperature"),
        ("top_logprobs without logprobs", "/v1/chat/completions", {**chat, "top_logprobs": 2}, 400, "top_logprobs"),
        ("max_tokens beyond the context", "/v1/chat/completions", {**chat, "max_tokens": 10**6}, 400, "messages"),
        ("prompt beyond the context", "/v1/completions", {"prompt": [100] * 10_000, "max_tokens": 1}, 400, "prompt"),
        ("several prompts", "/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt"),
        ("echo", "/v1/completions", {"prompt": "a", "echo": True}, 400, "echo"),
        ("unknown model", "/v1/chat/completions", {**chat, "model": "gpt-17"}, 404, "model"),
        ("a number as a string", "/v1/chat/completions", {**chat, "max_tokens": "3"}, 400, "max_tokens"),
        ("a boolean as a number", "/v1/chat/completions", {**chat, "max_tokens": True}, 400, "max_tokens"),
        ("a string as a boolean", "/v1/completions", {"prompt": "a", "stream": "yes"}, 400, "stream"),
        ("an unknown role", "/v1/chat/completions", {**chat, "messages": [{"role": "wizard", "content": "hi"}]},
         400, "messages"),
        ("tools", "/v1/chat/completions", {**chat, "tools": [{"type": "function", "function": {"name": "f"}}]},
         400, "tools"),
        ("tool_choice", "/v1/chat/completions", {**chat, "tool_choice": "required"}, 400, "tool_choice"),
        ("response_format", "/v1/chat/completions", {**chat, "response_format": {"type": "json_object"}},
         400, "response_format"),
        ("logit_bias", "/v1/completions", {"prompt": "a", "logit_bias": {"50256": -100}}, 400, "logit_bias"),
        ("best_of", "/v1/completions", {"prompt": "a", "best_of": 2}, 400, "best_of"),
        ("JSON nested too deep", "/v1/chat/completions", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
         400, None),
        ("a lone surrogate in a prompt", "/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 1}', 400, "prompt"),
        ("a lone surrogate in a model name", "/v1/completions", b'{"prompt": "a", "model": "\\ud800"}', 400, "model"),
    ]
    for name, path, body, status, param in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = server.http.post(path, content=content, headers={"Content-Type": "application/json"})
        error = assert_error_body(response, status)
        assert error["param"] == param, (name, error)
        if param is not None and param not in ("messages", "prompt"):
            assert param in error["message"], (name, error)
    assert server.http.post("/v1/chat/completions", json={**chat, "model": "gpt-17"}).json()["error"]["code"] == (
        "model_not_found")
    too_long = server.http.post("/v1/completions", json={"prompt": [100] * 10_000, "max_tokens": 1})
    assert "maximum context length" in too_long.json()["error"]["message"]
    assert_error_body(server.http.get("/v1/no-such-route"), 404)
    with pytest.raises(openai.NotFoundError):
        server.client.chat.completions.create(model="gpt-17", messages=QUESTION)
    # Unknown fields are ignored, as OpenAI's own clients send some; an omitted model is the served one.
    ok = server.http.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 1, "user": "me"})
    assert ok.status_code == 200, ok.text
    # The unsupported fields at their "off" values, as some clients send every field, and the
    # "developer" role (OpenAI's newer name for "system") are fine.
    off = {"tools": [], "tool_choice": "none", "response_format": {"type": "text"}, "logit_bias": {}, "best_of": 1,
           "messages": [{"role": "developer", "content": "Be brief."}, *QUESTION], "max_tokens": 1}
    ok = server.http.post("/v1/chat/completions", json=off)
    assert ok.status_code == 200, ok.text


def test_a_request_the_scheduler_rejects_gets_a_400_and_the_others_run(engine: Engine) -> None:
    settings = dict(model=MODEL, messages=QUESTION, temperature=0)
    with serve(engine, "tests.schedulers.rejects_long_requests") as served:
        with pytest.raises(openai.BadRequestError) as rejected:
            served.client.chat.completions.create(max_tokens=30, **settings)
        error = rejected.value.response.json()["error"]
        assert error["type"] == "invalid_request_error" and "asks for too much" in error["message"], error
        with pytest.raises(openai.APIError) as streamed:  # a stream's status line is sent: an error event
            list(served.client.chat.completions.create(max_tokens=30, stream=True, **settings))
        assert "asks for too much" in str(streamed.value)
        assert served.client.chat.completions.create(max_tokens=4, **settings).choices[0].message.content


def test_scheduler_crash_fails_requests_in_flight_then_recovers(engine: Engine) -> None:
    settings = dict(model=MODEL, messages=QUESTION, max_tokens=4, temperature=0, extra_body=IGNORE_EOS)
    where = re.compile(r"tests/schedulers/crash_on_third_step\.py:\d+")
    with serve(engine, "tests.schedulers.crash_on_third_step") as served:
        CrashOnThirdStepScheduler.calls = 0
        with pytest.raises(openai.InternalServerError) as failed:
            served.client.chat.completions.create(**settings)
        error = failed.value.response.json()["error"]
        assert error["type"] == "server_error" and where.search(error["message"]), error
        assert served.client.chat.completions.create(**settings).choices[0].finish_reason == "length"

        CrashOnThirdStepScheduler.calls = 0  # the next request crashes again, streamed this time
        with pytest.raises(openai.APIError) as streamed:
            list(served.client.chat.completions.create(stream=True, **settings))
        assert where.search(str(streamed.value)), streamed.value
        chunks = list(served.client.chat.completions.create(stream=True, **settings))
        assert chunks[-1].choices[0].finish_reason == "length"


def test_overload_gets_503_with_retry_after(engine: Engine) -> None:
    with serve(engine, max_pending_requests=1) as served:
        body = {"model": MODEL, "messages": QUESTION, "max_tokens": 500, "stream": True, "ignore_eos": True}
        with httpx.Client(base_url=served.url, timeout=60) as http, \
                http.stream("POST", "/v1/chat/completions", json=body) as resp:
            # Hold the iterator: dropping it would close the connection, which aborts the request.
            events = (line for line in resp.iter_lines() if line.startswith("data:"))
            next(events), next(events)
            rejected = served.http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 1})
            error = assert_error_body(rejected, 503)
            assert rejected.headers["retry-after"] == "1" and error["type"] == "server_error"
        # Once the long request is gone (aborted), its slot is free again.
        assert _wait_until(lambda: engine.allocator.num_used == 0, 10)
        ok = served.client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1)
        assert ok.choices[0].finish_reason in ("length", "stop")
        assert 'engine_request_failure_total{finish_reason="overloaded"} 1.0' in served.http.get("/metrics").text


def test_health_models_and_metrics(server: Served) -> None:
    health = server.http.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert [m.id for m in server.client.models.list()] == [MODEL]
    assert server.client.models.retrieve(MODEL).id == MODEL
    server.client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3, extra_body=IGNORE_EOS)
    response = server.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    names = ["engine_num_requests_running", "engine_num_requests_waiting", "engine_kv_blocks_used",
             "engine_kv_blocks_total", "engine_prompt_tokens_total", "engine_generation_tokens_total",
             "engine_time_to_first_token_seconds_bucket", "engine_inter_token_latency_seconds_bucket",
             "engine_request_success_total", "engine_request_failure_total"]
    missing = [n for n in names if n not in response.text]
    assert not missing, missing
    assert 'engine_request_success_total{finish_reason="length"} 1.0' in response.text
    assert "engine_generation_tokens_total 3.0" in response.text
    assert "engine_inter_token_latency_seconds_count 2.0" in response.text


def test_metrics_show_the_loops_counters(engine: Engine) -> None:
    repeat = [{"role": "user", "content": "Repeat exactly: red green blue, red green blue, red green blue"}]
    with serve(engine, "tests.schedulers.prompt_lookup") as served:
        served.client.chat.completions.create(model=MODEL, messages=repeat, max_tokens=8, temperature=0,
                                              extra_body=IGNORE_EOS)
        metrics = served.http.get("/metrics").text
        stats = served.loop.stats()
    counters = {name: float(value) for name, value in re.findall(r"^(engine_\w+_total) (\S+)$", metrics, re.M)}
    assert stats.num_accepted_tokens > 0
    expected = {
        "engine_num_preemptions_total": 0, "engine_prefix_cache_hits_total": 0,
        "engine_prefix_cache_queries_total": chat_prompt_len(engine, repeat),
        "engine_spec_decode_num_drafts_total": stats.num_drafts,
        "engine_spec_decode_num_draft_tokens_total": stats.num_draft_tokens,
        "engine_spec_decode_num_accepted_tokens_total": stats.num_accepted_tokens,
    }
    assert {name: counters.get(name) for name in expected} == expected


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine_core", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_help_lists_every_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    options = ["--model", "--scheduler", "--impl", "--host", "--port", "--dtype", "--device", "--block-size",
               "--kv-cache-memory-gb", "--max-model-len", "--max-num-seqs", "--max-num-batched-tokens",
               "--max-pending-requests", "--seed", "--served-model-name", "--no-check-invariants", "--log-level",
               "--enforce-eager", "--cuda-graph-max-batch-size", "--no-compile", "--attention-backend",
               "--num-kv-blocks", "--chunked-prefill-size", "--ttft-slo-ms", "--tpot-slo-ms", "--api-key",
               "--max-request-bytes", "--trust-request-chat-template", "--shutdown-timeout"]
    assert not [o for o in options if o not in result.stdout]


def test_cli_help_answers_without_importing_torch() -> None:
    # Importing torch and transformers takes seconds; --help and the option list must not wait for them.
    code = ("import runpy, sys\nsys.argv = ['engine_core', '--help']\ntry:\n"
            "    runpy.run_module('engine_core', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_cli_backend_choices_are_the_registry() -> None:
    from engine_core.attention import BACKENDS
    from engine_core.config import ATTENTION_BACKENDS

    assert ATTENTION_BACKENDS == tuple(BACKENDS)


@pytest.mark.parametrize("args, expected", [
    (["--model", "random:nonsense", "--port", "0"], "nonsense"),
    (["--scheduler", "no_such_package.scheduler", "--port", "0"], "no_such_package"),
    (["--cuda-graph-max-batch-size", "0", "--port", "0"], "--cuda-graph-max-batch-size must be at least 1"),
    (["--max-num-batched-tokens", "0", "--port", "0"], "--max-num-batched-tokens must be at least 1"),
    (["--num-kv-blocks", "0", "--port", "0"], "--num-kv-blocks must be at least 1"),
    (["--chunked-prefill-size", "0", "--port", "0"], "--chunked-prefill-size must be at least 1"),
    (["--attention-backend", "triton", "--device", "cpu", "--port", "0"], "needs a CUDA device"),
    (["--ttft-slo-ms", "-1", "--port", "0"], "--ttft-slo-ms must be at least 0 (0: no target), not -1.0"),
    (["--max-request-bytes", "0", "--port", "0"], "--max-request-bytes must be at least 1"),
    (["--shutdown-timeout", "-1", "--port", "0"], "--shutdown-timeout must be at least 0 seconds"),
    (["--tpot-slo-ms", "nan", "--port", "0"], "--tpot-slo-ms must be at least 0"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], expected: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
