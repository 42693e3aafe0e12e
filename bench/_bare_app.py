"""Baseline of bench_online: a bare FastAPI ``async def`` + orjson endpoint (same uvicorn settings)."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(orjson.dumps({"ready": True}), media_type="application/json")

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = orjson.loads(await request.body())
        items = [{"product_id": i, "position": i + 1, "score": 0.0, "sponsored": False} for i in range(20)]
        return Response(orjson.dumps({"user_id": body.get("user_id"), "items": items}),
                        media_type="application/json")

    return app
