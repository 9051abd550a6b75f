"""``/openapi.json``: the server's routes with the request bodies they accept, for schema-driven tools.

The handlers read their bodies themselves (``openai_protocol.parse_body``: strict types, OpenAI's
error format), so FastAPI cannot see the body models; this adds them, as components that the
POST routes refer to. A fuzzer such as schemathesis can then be pointed at the running server
(``nox -s fuzz``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel


def install_openapi(app: FastAPI, bodies: dict[str, type[BaseModel]]) -> None:
    """Serve ``app``'s schema with ``bodies`` (route path -> model of its JSON body) filled in."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for path, model in bodies.items():
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
                schema["paths"][path]["post"]["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
