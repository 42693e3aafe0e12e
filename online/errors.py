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
        return JSONResponse(error_body(code, exc.message, exc.field), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body("http_error", str(exc.detail)), status_code=exc.status_code)
