"""Who may use the server and how much one request may ask of it: the API key, the body-size
limit, request-supplied chat templates, prompts too long to tokenize, and shutdown's time limit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from engine_core import Engine

from .test_server import MODEL, QUESTION, REPO, assert_error_body, serve

COMPLETION = {"model": MODEL, "prompt": "Hello", "max_tokens": 2, "temperature": 0}


def test_with_an_api_key_v1_routes_need_it_and_probes_do_not(engine: Engine) -> None:
    with serve(engine, api_key="s3cret") as served:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            error = assert_error_body(served.http.get("/v1/models", headers=headers), 401)
            assert error["code"] == "invalid_api_key"
            assert_error_body(served.http.post("/v1/completions", json=COMPLETION, headers=headers), 401)
        assert served.http.get("/health").status_code == 200
        assert served.http.get("/metrics").status_code == 200
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="s3cret", max_retries=0)
        assert client.completions.create(**COMPLETION).choices[0].text is not None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{served.url}/v1", api_key="nope", max_retries=0).models.list()


def test_openapi_json_describes_the_request_bodies(engine: Engine) -> None:
    with serve(engine, api_key="s3cret") as served:  # a schema is public, like /health
        schema = served.http.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"), ("/v1/completions", "CompletionRequest")):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
    assert {"messages", "max_tokens", "temperature", "stream"} <= set(components["ChatCompletionRequest"]["properties"])
    assert "prompt" in components["CompletionRequest"]["required"]
    refs = re.findall(r'"#/components/schemas/(\w+)"', json.dumps(schema))
    assert refs and all(name in components for name in refs)
    assert {"/v1/models", "/health", "/metrics"} <= set(schema["paths"])


def test_the_serving_benchmark_sends_openai_api_key(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import aiohttp

    from benchmark.serving_client import auth_headers, fetch_models

    async def models(url: str) -> list[dict]:
        async with aiohttp.ClientSession(headers=auth_headers()) as session:
            return await fetch_models(session, url)

    with serve(engine, api_key="s3cret") as served:
        monkeypatch.setenv("OPENAI_API_KEY", "s3cret")
        assert [m["id"] for m in asyncio.run(models(served.url))] == [MODEL]
        monkeypatch.delenv("OPENAI_API_KEY")
        with pytest.raises(Exception, match="401|API key"):
            asyncio.run(models(served.url))


def test_a_body_over_the_limit_gets_413_however_it_is_sent(engine: Engine) -> None:
    with serve(engine, max_body_bytes=2000) as served:
        big = {**COMPLETION, "prompt": "word " * 1000}
        error = assert_error_body(served.http.post("/v1/completions", json=big), 413)
        assert error["code"] == "request_too_large" and "2000 bytes" in error["message"]

        def chunks():  # no Content-Length: the body is counted as it arrives
            yield b'{"prompt": "'
            for _ in range(100):
                yield b"word " * 10
            yield b'", "max_tokens": 2}'

        reply = served.http.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
        assert assert_error_body(reply, 413)["code"] == "request_too_large"
        assert served.http.post("/v1/completions", json=COMPLETION).status_code == 200


def test_a_request_chat_template_is_refused_unless_the_server_trusts_them(engine: Engine) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 2, "temperature": 0,
            "chat_template_kwargs": {"chat_template": "{{ 'x' * 50000000 }}"}}
    with serve(engine) as served:
        error = assert_error_body(served.http.post("/v1/chat/completions", json=body), 400)
        assert error["param"] == "chat_template_kwargs" and "--trust-request-chat-template" in error["message"]
        # Other template variables are still the request's to set.
        harmless = {**body, "chat_template_kwargs": {"enable_thinking": False}}
        assert served.http.post("/v1/chat/completions", json=harmless).status_code == 200
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with serve(engine, trust_request_chat_template=True) as served:
        trusted = {**body, "chat_template_kwargs": {"chat_template": template}}
        reply = served.http.post("/v1/chat/completions", json=trusted)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["prompt_tokens"] == len(engine.tokenizer.encode(QUESTION[0]["content"]))


def test_text_too_long_for_any_tokenization_to_fit_is_refused_before_tokenizing(engine: Engine) -> None:
    chars = engine.max_model_len * engine.tokenizer.max_token_chars + 1
    with serve(engine, max_body_bytes=chars + 10_000) as served:
        for path, body, param in (
            ("/v1/completions", {**COMPLETION, "prompt": "a" * chars}, "prompt"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a" * chars}]}, "messages"),
        ):
            error = assert_error_body(served.http.post(path, json=body), 400)
            assert error["param"] == param and f"{chars} characters" in error["message"]


def test_shutdown_cuts_off_a_request_that_would_never_end_after_the_time_limit() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine_core", "--model", "random:tiny", "--port", "0", "--shutdown-timeout", "1",
         "--scheduler", "tests.schedulers.never_schedules"],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:  # uvicorn names the port it bound
            if match := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line):
                url = match.group(1)
                break
        assert url, "the server did not start"
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
        first_chunk = threading.Event()

        def stream() -> None:
            body = {"messages": QUESTION, "max_tokens": 5, "stream": True}
            try:
                with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as reply:
                    for _ in reply.iter_lines():
                        first_chunk.set()
            except httpx.HTTPError:
                pass

        threading.Thread(target=stream, daemon=True).start()
        assert first_chunk.wait(30), "the stream did not start"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_hook_that_does_not_return_fails_the_waiting_requests_and_health_says_where(engine: Engine) -> None:
    from engine_core.loop import EngineLoop
    from engine_core.scheduler_loader import load_scheduler
    from engine_core.server import BackgroundServer, create_app

    from .schedulers import stalls_in_schedule

    stalls_in_schedule.StallsInScheduleScheduler.stalled = False
    loop = EngineLoop(engine, load_scheduler("tests.schedulers.stalls_in_schedule"), hook_timeout_s=1.0)
    loop.start()
    try:
        with BackgroundServer(create_app(loop, MODEL)) as server, httpx.Client(base_url=server.base_url,
                                                                               timeout=60) as http:
            started = time.monotonic()
            reply = http.post("/v1/completions", json=COMPLETION)
            error = assert_error_body(reply, 500)
            # Failed by the watchdog while the hook still spun (it spins for 3 s), naming the line.
            assert time.monotonic() - started < stalls_in_schedule.STALL_SECONDS
            assert "schedule() has not returned" in error["message"]
            assert "tests/schedulers/stalls_in_schedule.py" in error["message"] and "in schedule" in error["message"]
            health = assert_error_body(http.get("/health"), 503)
            assert health["code"] == "scheduler_stuck" and "stalls_in_schedule.py" in health["message"]
            assert assert_error_body(http.post("/v1/completions", json=COMPLETION), 503)["code"] == "scheduler_stuck"
            # Once the hook returns, the loop restarts the scheduler and serves again.
            deadline = time.monotonic() + 30
            while http.get("/health").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert http.post("/v1/completions", json=COMPLETION).status_code == 200
            assert loop.stats().num_scheduler_failures == 1
    finally:
        loop.stop()
    assert engine.allocator.num_used == 0
