"""What every HTTP request must pass before a handler sees it: the API key and a body-size limit.

Both run as ASGI middleware, in front of FastAPI, so they cost a request nothing it has not
earned: a request without the key is refused before its body is read, and a body over the limit
is cut off at the limit instead of being buffered whole (a 10 MB prompt would otherwise hold
the event loop while it is parsed and tokenized).

    client -> RequestGuard -> FastAPI routes
              401 if /v1/... lacks "Authorization: Bearer <key>" (when a key is set)
              413 if Content-Length, or the bytes actually received, exceed max_body_bytes

``/health`` and ``/metrics`` stay open without a key, as in vLLM: probes and scrapers carry none.
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .openai_protocol import OpenAIError, error_body

PROTECTED_PREFIX = "/v1/"


class RequestGuard:
    """ASGI middleware: API-key check on ``/v1/`` routes and a limit on request body size."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key and scope["path"].startswith(PROTECTED_PREFIX) and not self._authorized(headers):
            await _refuse(scope, receive, send, 401, "invalid or missing API key: send the header "
                          "'Authorization: Bearer <key>' with the key the server was started with", "invalid_api_key")
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(scope, receive, send, 413, self._too_large(), "request_too_large")
            return
        received = 0

        async def counting_receive() -> Message:
            # A body sent without Content-Length (chunked) is counted as it arrives; the handler
            # reading it gets the error, which the app answers like any other OpenAIError.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise OpenAIError(self._too_large(), status=413, code="request_too_large")
            return message

        await self.app(scope, counting_receive, send)

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        assert self.api_key is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    def _too_large(self) -> str:
        return f"the request body is larger than this server's limit of {self.max_body_bytes} bytes"


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str, code: str) -> None:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    response = JSONResponse(error_body(message, "invalid_request_error", None, code), status_code=status,
                            headers=headers)
    await response(scope, receive, send)
