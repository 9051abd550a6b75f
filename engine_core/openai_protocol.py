"""The OpenAI wire format: request bodies in, response and chunk dicts out.

The server speaks the subset of the OpenAI API that real clients (the ``openai`` package,
benchmark tools, curl) use for text generation, with vLLM's extensions (``top_k``, ``min_p``,
``repetition_penalty``, ``stop_token_ids``, ``ignore_eos``, ``chat_template_kwargs``), so that
the same client code runs against this engine, vLLM or OpenAI. Keeping the format here, apart
from the server, lets it be read (and tested) without any HTTP machinery.

Requests are pydantic models that ignore unknown fields (clients send ``user``, ``metadata``
and friends) and are turned into :class:`~engine_core.sampling_params.SamplingParams`, whose
own checks give the range errors. Everything a client did wrong becomes an
:class:`OpenAIError`, which the server renders as the OpenAI error body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .sampler import TokenLogprobs
from .sampling_params import SamplingParams

TokenText = Callable[[int], str]
RequestT = TypeVar("RequestT", bound="_Body")

# JSON has no -inf; vLLM reports this for tokens the model rules out completely.
_MIN_LOGPROB = -9999.0


class OpenAIError(Exception):
    """An error to send to the client as ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self, message: str, status: int = 400, type: str = "invalid_request_error",
        param: str | None = None, code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def validation_error(errors: Sequence[Mapping[str, Any]]) -> OpenAIError:
    """A 400 whose message names the fields that are wrong (FastAPI's default is a 422 list).

    ``errors`` is pydantic's ``ValidationError.errors()`` (or FastAPI's, whose locations start
    with ``"body"``).
    """
    problems = []
    params = []
    for item in errors[:3]:
        loc = [str(part) for part in item.get("loc", ())]
        if loc[:1] == ["body"]:
            loc = loc[1:]
        params.append(loc[0] if loc else None)
        problems.append(f"{'.'.join(loc) or 'body'}: {str(item.get('msg', 'invalid')).removeprefix('Value error, ')}")
    message = "invalid request: " + ("; ".join(problems) or "malformed body")
    return OpenAIError(message, param=params[0] if params else None)


def parse_body(raw: bytes, model: type[RequestT]) -> RequestT:
    """A request body as ``model``, or an OpenAIError (400) that says what is wrong with it."""
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise OpenAIError(f"the request body is not valid JSON: {err}") from err
    except RecursionError as err:  # the parser recurses once per level of nesting
        raise OpenAIError("the request body is nested too deeply") from err
    if not isinstance(data, dict):
        raise OpenAIError("the request body must be a JSON object")
    field = _field_with_lone_surrogate(data)
    if field is not None:  # valid JSON ("\ud800"), but no tokenizer or encoder can take it
        raise OpenAIError(f"{field}: the text holds a lone UTF-16 surrogate, which is not a character",
                          param=field)
    try:
        # Strict: "3" is not a number and "yes" not a boolean (OpenAI refuses them too).
        return model.model_validate(data, strict=True)
    except ValidationError as err:
        raise validation_error(err.errors()) from err


def _field_with_lone_surrogate(data: dict[str, Any]) -> str | None:
    """The top-level field of ``data`` whose strings (keys included) hold a lone surrogate, if any."""
    for field, value in data.items():
        pending: list[Any] = [field, value]
        while pending:  # iterative: the body may be nested as deep as the parser allowed
            item = pending.pop()
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return field.encode("utf-8", "replace").decode()
            elif isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
    return None


class _Body(BaseModel):
    # Unknown fields are ignored, as OpenAI clients send some (user, metadata, store, ...).
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool | None = False


class ContentPart(_Body):
    type: str
    text: str | None = None


# Roles a chat template knows; OpenAI's "developer" is its newer name for "system".
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ChatMessage(_Body):
    role: str
    content: str | list[ContentPart] | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        if value not in CHAT_ROLES:
            raise ValueError(f"role {value!r} is not supported; use one of {', '.join(CHAT_ROLES)}")
        return CHAT_ROLES[value]

    def text(self) -> str:
        """The content as one string; text parts are joined by newlines, as vLLM does."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise OpenAIError(f"content parts of type {part.type!r} are not supported; send text", param="messages")
        return "\n".join(part.text or "" for part in self.content)


class SamplingRequest(_Body):
    """Fields shared by both endpoints, with OpenAI's defaults (``None`` means not sent)."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    # Booleans accept null too (some clients send every field, unset ones as null).
    ignore_eos: bool | None = False
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # Sent by OpenAI clients but not implemented here: refused unless at their "off" values,
    # so that a client relying on them learns it now rather than from a wrong answer.
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, Any] | None = None
    best_of: int | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options is not None and self.stream_options.include_usage)

    def check_supported(self) -> None:
        if self.n not in (None, 1):
            raise OpenAIError(f"n={self.n} is not supported: this server returns exactly one choice (n=1)", param="n")
        off = {"tools": not self.tools, "tool_choice": self.tool_choice in (None, "none"),
               "functions": not self.functions, "function_call": self.function_call in (None, "none"),
               "response_format": (self.response_format or {}).get("type", "text") == "text",
               "logit_bias": not self.logit_bias, "best_of": self.best_of in (None, 1)}
        for field, is_off in off.items():
            if not is_off:
                raise OpenAIError(f"{field} is not supported by this server", param=field)

    def _requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def _logprobs(self) -> int | None:
        return None

    def to_sampling_params(self, prompt_len: int, max_model_len: int) -> SamplingParams:
        """The engine's settings for this request; ``max_tokens`` defaults to the rest of the context."""
        max_tokens = self._requested_max_tokens()
        if max_tokens is None:
            # As vLLM: everything the context has left (at least 1, so that a prompt that fills
            # the context gets the engine's "too long" message rather than a max_tokens one).
            max_tokens = max(1, max_model_len - prompt_len)
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        try:
            return SamplingParams(
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                top_k=self.top_k or 0,
                min_p=self.min_p or 0.0,
                repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
                frequency_penalty=self.frequency_penalty or 0.0,
                presence_penalty=self.presence_penalty or 0.0,
                seed=self.seed,
                max_tokens=max_tokens,
                stop=stop,
                stop_token_ids=tuple(self.stop_token_ids or ()),
                ignore_eos=bool(self.ignore_eos),
                logprobs=self._logprobs(),
            )
        except ValueError as err:
            raise OpenAIError(str(err), param=str(err).split(" ", 1)[0]) from err


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.top_logprobs is not None and not self.logprobs:
            raise OpenAIError("top_logprobs needs logprobs set to true", param="top_logprobs")

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def _requested_max_tokens(self) -> int | None:
        # max_completion_tokens is OpenAI's newer name; it wins when both are sent.
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def _logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingRequest):
    # Normalised by the validator below to a string or one list of token ids.
    prompt: str | list[int]
    logprobs: int | None = None
    echo: bool | None = False
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(p, (str, list)) for p in value):
            if len(value) > 1:
                raise ValueError("only one prompt per request is supported")
            value = value[0]
        if isinstance(value, str) or (isinstance(value, list) and all(_is_token_id(t) for t in value)):
            return value
        raise ValueError("prompt must be a string, a list of token ids, or a list with one of those")

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise OpenAIError("echo is not supported", param="echo")
        if self.suffix:
            raise OpenAIError("suffix is not supported", param="suffix")

    def _logprobs(self) -> int | None:
        return self.logprobs


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ---- responses ---------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _logprob(value: float) -> float:
    return max(value, _MIN_LOGPROB) if not math.isnan(value) else _MIN_LOGPROB


def chat_logprobs(token_text: TokenText, logprobs: list[TokenLogprobs]) -> dict[str, Any]:
    """``choices[].logprobs`` of a chat completion (or of one chunk)."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = token_text(token_id)
        return {"token": text, "logprob": _logprob(logprob), "bytes": list(text.encode("utf-8"))}

    content = []
    for lp in logprobs:
        item = entry(lp.token_id, lp.logprob)
        item["top_logprobs"] = [entry(t, v) for t, v in lp.top]
        content.append(item)
    return {"content": content}


def completion_logprobs(token_text: TokenText, logprobs: list[TokenLogprobs], text_offset: int = 0) -> dict[str, Any]:
    """``choices[].logprobs`` of a completion; offsets count from ``text_offset`` (0: the first token)."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    for lp in logprobs:
        text = token_text(lp.token_id)
        tokens.append(text)
        token_logprobs.append(_logprob(lp.logprob))
        # As OpenAI's legacy API: the sampled token is always among them (up to logprobs + 1).
        tops.append({token_text(t): _logprob(v) for t, v in lp.top} | {text: _logprob(lp.logprob)})
        offsets.append(text_offset)
        text_offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def chat_completion(
    request_id: str, created: int, model: str, text: str, finish_reason: str | None,
    usage_: dict[str, int], logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{
            "index": 0, "message": {"role": "assistant", "content": text},
            "logprobs": logprobs, "finish_reason": finish_reason,
        }],
        "usage": usage_,
    }


def chat_chunk(
    request_id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None, with_usage_field: bool = False,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        chunk["usage"] = None  # OpenAI sends null on every chunk but the last when usage is asked for
    return chunk


def completion(
    request_id: str, created: int, model: str, text: str, finish_reason: str | None,
    usage_: dict[str, int] | None, logprobs: dict[str, Any] | None = None, chunk: bool = False,
) -> dict[str, Any]:
    """A completion, or one streamed chunk of it (the same shape, as in OpenAI's API)."""
    body: dict[str, Any] = {
        "id": request_id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
    }
    if not chunk or usage_ is not None:
        body["usage"] = usage_
    return body


def usage_chunk(request_id: str, created: int, model: str, object_: str, usage_: dict[str, int]) -> dict[str, Any]:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices, only usage."""
    return {"id": request_id, "object": object_, "created": created, "model": model, "choices": [], "usage": usage_}
