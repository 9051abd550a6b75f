"""The OpenAI-compatible HTTP server: FastAPI on top of the engine loop.

A request's life: parse and validate the body -> tokenize -> ``loop.submit`` with a callback
that hands each :class:`~engine_core.loop.RequestOutput` to the request's ``asyncio.Queue``
through the :class:`~engine_core.output_relay.OutputRelay` (one event-loop wake-up per step, not
per request) -> the handler consumes the queue, as one response or as server-sent events. The
callback runs on the engine loop thread and never waits, so a slow or vanished client can
never make the scheduler wait.

Every request that reached ``submit`` is closed exactly once (:meth:`_Generation.close`): that
frees its slot in the overload count, records its outcome in the metrics and, if it had not
finished, aborts it so that the scheduler frees its KV blocks. Streams close from a ``finally``
in the event generator and, because Starlette may never start the generator when the client
is gone before the first byte, from :class:`_ClosingStream` around the whole response too.

Errors of every kind use OpenAI's body ``{"error": {"message", "type", "param", "code"}}``,
including FastAPI's own (validation is a 400 here, not a 422) and unknown routes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from . import openai_protocol as proto
from .background_server import BackgroundServer  # noqa: F401  (tests and tools import it from here)
from .config import MAX_REQUEST_BYTES
from .http_guard import RequestGuard
from .loop import EngineLoop, RequestOutput
from .metrics import EngineMetrics
from .openai_protocol import ChatCompletionRequest, CompletionRequest, OpenAIError
from .openapi_schema import install_openapi
from .output_relay import OutputRelay
from .sampler import TokenLogprobs
from .sampling_params import SamplingParams

# How often a non-streaming handler checks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.5
_DONE = "data: [DONE]\n\n"


class _ServerState:
    """What the handlers of one app share (one per ``create_app``, never module-global)."""

    def __init__(self, loop: EngineLoop, model_name: str, max_pending_requests: int,
                 trust_request_chat_template: bool) -> None:
        self.loop = loop
        self.model_name = model_name
        self.max_pending_requests = max_pending_requests
        self.trust_request_chat_template = trust_request_chat_template
        # Tokenizing and templating run here, not on the event loop, so a long prompt delays
        # only the requests queued behind it; one worker, because HF tokenizers are not safe to
        # call from several threads at once.
        self.text_worker = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
        self.tokenizer = loop.engine.tokenizer
        self.max_model_len = loop.engine.max_model_len
        self.metrics = EngineMetrics(loop.stats)
        self.in_flight = 0
        self.created = int(time.time())
        self._relay: OutputRelay[RequestOutput] | None = None

    def relay(self) -> OutputRelay[RequestOutput]:
        """The relay into the running event loop (tests may serve one app from several loops)."""
        event_loop = asyncio.get_running_loop()
        if self._relay is None or self._relay.event_loop is not event_loop:
            self._relay = OutputRelay(event_loop)
        return self._relay

    def token_text(self, token_id: int) -> str:
        # Special tokens are shown (an EOS in logprobs should read "<|im_end|>", not "").
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    async def tokenize(self, fn: Callable[..., list[int]], *args: Any, **kwargs: Any) -> list[int]:
        return await asyncio.get_running_loop().run_in_executor(self.text_worker, lambda: fn(*args, **kwargs))

    def check_prompt_chars(self, chars: int, param: str) -> None:
        """Refuse, before tokenizing, text too long to fit the context whatever its tokens."""
        limit = self.max_model_len * self.tokenizer.max_token_chars
        if chars > limit:
            raise OpenAIError(
                f"the prompt has {chars} characters; no token of this model covers more than "
                f"{self.tokenizer.max_token_chars}, so it cannot fit the {self.max_model_len}-token context",
                param=param)

    def check_model(self, model: str | None) -> None:
        # An omitted model means the served one, so that minimal curl examples work.
        if model is not None and model != self.model_name:
            raise OpenAIError(f"The model `{model}` does not exist; this server serves `{self.model_name}`.",
                              status=404, param="model", code="model_not_found")

    def begin(self, prefix: str, prompt_ids: list[int], body: proto.SamplingRequest) -> _Generation:
        """Check the request against the limits and submit it; raises OpenAIError if it cannot run."""
        if not prompt_ids:
            raise OpenAIError("the prompt is empty", param="prompt")
        params = body.to_sampling_params(len(prompt_ids), self.max_model_len)
        if self.loop.stuck:
            raise OpenAIError(f"the scheduler is stuck: {self.loop.stuck}", status=503, type="server_error",
                              code="scheduler_stuck")
        # No await between this check and submit's increment: the count cannot be raced.
        if self.in_flight >= self.max_pending_requests:
            self.metrics.request_finished("overloaded")
            raise OpenAIError(f"the server is overloaded ({self.in_flight} requests in flight); retry later",
                              status=503, type="server_error", code="overloaded")
        generation = _Generation(self, f"{prefix}-{uuid.uuid4().hex}", prompt_ids, params)
        try:
            generation.submit()
        except ValueError as err:  # e.g. prompt + max_tokens longer than the context
            raise OpenAIError(str(err), param="messages" if prefix == "chatcmpl" else "prompt") from err
        return generation


class _Generation:
    """One submitted request: its output queue, its metrics, and ending it exactly once."""

    def __init__(self, state: _ServerState, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        self.state = state
        self.request_id = request_id
        self.model = state.model_name
        self.prompt_ids = prompt_ids
        self.params = params
        self.created = int(time.time())
        self.queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
        self.timer = state.metrics.start_request()
        self.finish_reason: str | None = None
        self.num_output_tokens = 0
        self._closed = False

    def submit(self) -> None:
        """Hand the request to the engine loop; raises ValueError if it can never run."""
        relay, queue = self.state.relay(), self.queue
        self.state.loop.submit(self.request_id, self.prompt_ids, self.params, lambda out: relay.send(queue, out))
        self.state.in_flight += 1

    async def next_output(self) -> RequestOutput:
        out = await self.queue.get()
        self.timer.on_tokens(len(out.new_token_ids), out.num_prompt_tokens)
        self.num_output_tokens = out.num_output_tokens
        if out.finished:
            self.finish_reason = out.finish_reason
        return out

    def usage(self) -> dict[str, int]:
        return proto.usage(len(self.prompt_ids), self.num_output_tokens)

    def close(self) -> None:
        """Release the slot, record the outcome, and abort the request if it is still running."""
        if self._closed:
            return
        self._closed = True
        self.state.in_flight -= 1
        if self.finish_reason is None:
            self.state.loop.abort(self.request_id)  # the scheduler frees its KV blocks
        self.state.metrics.request_finished(self.finish_reason or "abort")


class _ClosingStream(StreamingResponse):
    """A StreamingResponse that closes its generation however the response ends."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _error_response(err: OpenAIError) -> JSONResponse:
    headers = {"Retry-After": "1"} if err.status == 503 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _collect(request: Request, gen: _Generation) -> tuple[str, list[TokenLogprobs]] | None:
    """All of a non-streaming request's output; None if the client went away first."""
    texts: list[str] = []
    logprobs: list[TokenLogprobs] = []
    check_at = time.monotonic() + DISCONNECT_POLL_SECONDS
    # One getter task that outlives the timeouts: asyncio.wait never cancels it, whereas a
    # wait_for that times out just as the get completes can drop the output (Python >= 3.12).
    getter: asyncio.Task[RequestOutput] | None = None
    try:
        while True:
            getter = getter or asyncio.ensure_future(gen.next_output())
            done, _ = await asyncio.wait({getter}, timeout=max(check_at - time.monotonic(), 0.0))
            out, getter = (getter.result(), None) if done else (None, getter)
            # Checked on a clock, not only when no output came: a running request outputs far
            # more often than every half second, and its client may be long gone.
            if time.monotonic() >= check_at:
                if await request.is_disconnected():
                    return None
                check_at = time.monotonic() + DISCONNECT_POLL_SECONDS
            if out is None:
                continue
            texts.append(out.new_text)
            logprobs.extend(out.logprobs or [])
            if out.finished:
                if out.finish_reason == "error" and out.rejected:
                    raise OpenAIError(out.error or "the request was rejected")
                if out.finish_reason == "error":
                    raise OpenAIError(out.error or "the request failed", status=500, type="server_error")
                return "".join(texts), logprobs
    finally:
        if getter is not None:
            getter.cancel()
        gen.close()


async def _events(
    gen: _Generation, object_: str, with_usage: bool, render: Callable[[RequestOutput], dict[str, Any] | None],
    first: dict[str, Any] | None = None,
) -> AsyncIterator[str]:
    """The SSE events of a stream: ``render`` turns each output into a chunk (None: nothing to send)."""
    try:
        if first is not None:
            yield _sse(first)
        while True:
            out = await gen.next_output()
            if out.finish_reason == "error":
                # The status line (200) is long gone: the error travels as an event, as in OpenAI's API.
                kind = "invalid_request_error" if out.rejected else "server_error"
                yield _sse(proto.error_body(out.error or "the request failed", kind))
                break
            chunk = render(out)
            if chunk is not None:
                yield _sse(chunk)
            if out.finished:
                if with_usage:
                    yield _sse(proto.usage_chunk(gen.request_id, gen.created, gen.model, object_, gen.usage()))
                break
        yield _DONE
    finally:
        gen.close()


def _chat_events(state: _ServerState, gen: _Generation, body: ChatCompletionRequest) -> AsyncIterator[str]:
    ids, with_usage = (gen.request_id, gen.created, gen.model), body.include_usage

    def render(out: RequestOutput) -> dict[str, Any] | None:
        logprobs = proto.chat_logprobs(state.token_text, out.logprobs) if out.logprobs else None
        if not (out.new_text or logprobs or out.finished):
            return None  # tokens whose text is held back (half a character, a possible stop string)
        delta = {"content": out.new_text} if out.new_text else {}
        return proto.chat_chunk(*ids, delta, out.finish_reason, logprobs, with_usage)

    first = proto.chat_chunk(*ids, {"role": "assistant", "content": ""}, with_usage_field=with_usage)
    return _events(gen, "chat.completion.chunk", with_usage, render, first)


def _completion_events(state: _ServerState, gen: _Generation, body: CompletionRequest) -> AsyncIterator[str]:
    ids, offset = (gen.request_id, gen.created, gen.model), 0

    def render(out: RequestOutput) -> dict[str, Any] | None:
        nonlocal offset
        logprobs = None
        if out.logprobs:
            logprobs = proto.completion_logprobs(state.token_text, out.logprobs, offset)
            offset += sum(len(t) for t in logprobs["tokens"])
        if not (out.new_text or logprobs or out.finished):
            return None
        return proto.completion(*ids, out.new_text, out.finish_reason, None, logprobs, chunk=True)

    return _events(gen, "text_completion", body.include_usage, render)


def create_app(
    loop: EngineLoop, model_name: str, max_pending_requests: int = 256, *, api_key: str | None = None,
    max_body_bytes: int = MAX_REQUEST_BYTES, trust_request_chat_template: bool = False,
) -> FastAPI:
    """The HTTP app serving ``loop`` as ``model_name``.

    The caller owns the loop: it starts it before serving and stops it afterwards. At most
    ``max_pending_requests`` generation requests are in flight; more get a 503 with Retry-After.
    api_key: when set, ``/v1/`` routes need ``Authorization: Bearer <api_key>`` (401 otherwise).
    max_body_bytes: larger request bodies get a 413 before they are read whole.
    trust_request_chat_template: accept a request's own ``chat_template_kwargs.chat_template``
        (a Jinja template the server would run); refused by default.
    """
    state = _ServerState(loop, model_name, max_pending_requests, trust_request_chat_template)
    app = FastAPI(title="engine_core", openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    app.add_middleware(RequestGuard, api_key=api_key, max_body_bytes=max_body_bytes)
    app.state.server = state

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, err: OpenAIError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error_response(proto.validation_error(list(err.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = f"Invalid URL ({request.method} {request.url.path})" if err.status_code == 404 else str(err.detail)
        code = "not_found" if err.status_code == 404 else None
        return JSONResponse(proto.error_body(message, "invalid_request_error", None, code),
                            status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        # Starlette re-raises after sending this, so uvicorn still logs the traceback.
        return JSONResponse(proto.error_body(f"internal error: {type(err).__name__}: {err}", "server_error"),
                            status_code=500)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = proto.parse_body(await request.body(), ChatCompletionRequest)
        state.check_model(body.model)
        body.check_supported()
        template_kwargs = body.chat_template_kwargs or {}
        if "chat_template" in template_kwargs and not state.trust_request_chat_template:
            raise OpenAIError("chat_template_kwargs.chat_template: this server does not run chat templates sent "
                              "by requests (start it with --trust-request-chat-template to allow them)",
                              param="chat_template_kwargs")
        conversation = body.conversation()
        state.check_prompt_chars(sum(len(m["content"]) for m in conversation), "messages")
        try:
            prompt_ids = await state.tokenize(state.tokenizer.apply_chat_template, conversation, **template_kwargs)
        except (ValueError, TypeError, jinja2.TemplateError) as err:
            raise OpenAIError(f"cannot apply the chat template: {err}", param="messages") from err
        gen = state.begin("chatcmpl", prompt_ids, body)
        if body.stream:
            return _ClosingStream(_chat_events(state, gen, body), gen.close)
        result = await _collect(request, gen)
        if result is None:
            return Response(status_code=499)  # nobody is listening; nginx's "client closed request"
        text, logprobs = result
        lp = proto.chat_logprobs(state.token_text, logprobs) if body.logprobs else None
        return JSONResponse(proto.chat_completion(gen.request_id, gen.created, state.model_name, text,
                                                  gen.finish_reason, gen.usage(), lp))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = proto.parse_body(await request.body(), CompletionRequest)
        state.check_model(body.model)
        body.check_supported()
        if isinstance(body.prompt, str):
            state.check_prompt_chars(len(body.prompt), "prompt")
            prompt_ids = await state.tokenize(state.tokenizer.encode, body.prompt)
        else:
            prompt_ids = list(body.prompt)
        if any(t >= state.tokenizer.vocab_size for t in prompt_ids):
            raise OpenAIError(f"prompt has token ids outside the vocabulary (size {state.tokenizer.vocab_size})",
                              param="prompt")
        gen = state.begin("cmpl", prompt_ids, body)
        if body.stream:
            return _ClosingStream(_completion_events(state, gen, body), gen.close)
        result = await _collect(request, gen)
        if result is None:
            return Response(status_code=499)
        text, logprobs = result
        lp = proto.completion_logprobs(state.token_text, logprobs) if body.logprobs is not None else None
        return JSONResponse(proto.completion(gen.request_id, gen.created, state.model_name, text,
                                             gen.finish_reason, gen.usage(), lp))

    def model_card() -> dict[str, Any]:
        return {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "engine_core",
                "max_model_len": state.max_model_len}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict[str, Any]:
        state.check_model(model)
        return model_card()

    @app.get("/health")
    async def health() -> Response:
        if loop.stuck:  # probes see it too: the process is alive, the engine is not
            return _error_response(OpenAIError(f"the scheduler is stuck: {loop.stuck}", status=503,
                                               type="server_error", code="scheduler_stuck"))
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        payload, content_type = state.metrics.render()
        return Response(payload, media_type=content_type)

    install_openapi(app, {"/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest})
    return app
