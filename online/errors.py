"""Errors -> ``{"error": {"code", "message", "field"?}}``: 4xx for the caller's mistakes, 503 only when
the service is not ready, never a bare 500 for input."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpu_core.errors import JaikodError

log = logging.getLogger(__name__)


def error_body(code: str, message: str, field: str | None = None) -> dict:
    err = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


def _field_of(loc) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        msg = str(first.get("msg", "invalid request"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
            if ":" in msg and field is None:  # a model-level check names its field first
                field = msg.split(":", 1)[0]
        if first.get("type") in ("json_invalid", "model_attributes_type") and field is None:
            msg = "request body must be a JSON object"
        if field and not msg.startswith(f"{field}:"):
            msg = f"{field}: {msg}"
        return JSONResponse(error_body("invalid_request", msg, field), status_code=422)

    @app.exception_handler(JaikodError)
    async def _jaikod(_: Request, exc: JaikodError):
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        code = type(exc).__name__.removesuffix("Error").lower() or "error"
        headers = {"Retry-After": str(retry)} if (retry := getattr(exc, "retry_after_s", None)) else None
        return JSONResponse(error_body(code, exc.message, exc.field), status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body("http_error", str(exc.detail)), status_code=exc.status_code)


# what the edge and the handlers above answer, as the OpenAPI spec states it
ERROR_RESPONSES = {
    "400": "malformed request (e.g. a Content-Length that is not a number)",
    "413": "request body larger than the route's limit",
    "422": "invalid request: the field at fault is named",
    "429": "shed by admission control; retry after Retry-After seconds",
    "431": "request headers too large",
    "503": "not ready (feature store, event bus or model registry unavailable)",
}


def install_openapi(app: FastAPI) -> None:
    """The spec states the real error envelope (``ErrorResponse``) for every operation's error answers,
    in place of FastAPI's default validation-error schema, so a schema-driven client (or fuzzer) can
    check every answer."""
    from fastapi.openapi.utils import get_openapi

    from online.schemas import ErrorResponse

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        err = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(err.pop("$defs", {}))
        schemas["ErrorResponse"] = err
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                responses = op.setdefault("responses", {})
                for status, why in ERROR_RESPONSES.items():
                    responses[status] = {"description": why, **ref}
                if any(p.get("in") == "header" and p.get("name", "").lower() == "x-admin-token"
                       for p in op.get("parameters", ())):
                    responses["403"] = {"description": "admin token missing or wrong", **ref}
                responses.setdefault("404", {"description": "not found", **ref})
        app.openapi_schema = spec
        return spec

    app.openapi = openapi
