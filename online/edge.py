"""The edge: what every request passes before a route sees it (one pure ASGI middleware, outermost
after Starlette's own error middleware).

1. **Headers**: all request headers together at most ``max_header_bytes`` -> 431.
2. **Admission** (per worker): ranking requests (``/v1/feed``, ``/v1/search``) beyond
   ``max_in_flight`` in flight, and other ``/v1`` requests beyond ``max_in_flight_other``, are answered
   ``429`` with ``Retry-After`` before any work; the admin API and the ops endpoints are never shed. The
   429 is sent after a pause (an event-loop timer, no slot held) that paces clients retrying at once:
   ``shed_delay_ms`` for a connection's first 429, doubled each time the same connection comes back
   before its ``Retry-After`` ran out, up to ``shed_delay_max_ms`` (:class:`ShedPacer`). A client that
   honours ``Retry-After`` only ever waits the first pause; one that ignores it costs the worker a few
   429s a second instead of hundreds. The arrival time is stamped into the scope (:func:`arrival`), so a
   request's deadline counts the time it queued for a thread, and a request that queued longer than
   ``max_queue_ms`` is shed by :func:`shed_if_queued` with the same 429.
3. **Body size**: a ``Content-Length`` over the route's limit -> 413 before the body is read; a body
   without one is read up to the limit and refused as soon as it passes it (never buffered whole).
4. **Valid Unicode**: a JSON body whose strings hold a lone surrogate (``"\\ud800"``, which Python's JSON
   decoder accepts and nothing downstream can encode) -> 422 naming the field.

Every refusal is the API's error envelope ``{"error": {"code", "message", "field"?}}``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import orjson

from gpu_core.errors import JaikodError
from gpu_core.settings import Settings
from online.errors import error_body

RANKING = frozenset({"/v1/feed", "/v1/search"})
UPLOADS = frozenset({"/v1/analyze-image", "/v1/ekyc-match", "/v1/listings"})
EVENTS = "/v1/events"
ARRIVAL = "jaikod.arrival"  # scope key: time.perf_counter() when the request reached the edge
AHEAD = "jaikod.ahead"  # scope key: requests of the same class already in flight when it was admitted
# a JSON escape of a UTF-16 surrogate, or the (CESU-8) bytes of one, which json.loads decodes with surrogatepass
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\xed[\xa0-\xbf]")


class Overloaded(JaikodError):
    """The worker is at its admission limit; the caller should retry after ``Retry-After`` seconds."""

    http_status = 429
    retry_after_s: int = 1


def admission_class(path: str) -> str | None:
    """Which in-flight limit a path counts against (None: never shed)."""
    if path in RANKING:
        return "ranking"
    if path.startswith("/v1/") and not path.startswith("/v1/admin"):
        return "other"
    return None


def body_limit(path: str, s: Settings) -> int:
    if path in UPLOADS:
        return s.max_upload_body_bytes
    if path == EVENTS:
        return s.max_events_body_bytes
    return s.max_body_bytes


def arrival(scope: dict) -> float:
    return scope.get(ARRIVAL) or time.perf_counter()


def shed_if_queued(scope: dict, s: Settings) -> float:
    """The request's arrival time; raises :class:`Overloaded` when it queued behind other requests for
    longer than ``max_queue_ms`` (a lone request on a slow machine is never shed)."""
    t0 = arrival(scope)
    if scope.get(AHEAD, 0) > 0 and (time.perf_counter() - t0) * 1000.0 > s.max_queue_ms:
        exc = Overloaded(f"request queued longer than {s.max_queue_ms:g} ms; retry later")
        exc.retry_after_s = s.retry_after_s
        raise exc
    return t0


class ShedPacer:
    """How long to hold a connection's 429 (module doc, 2.): ``first_s`` for a connection not shed within the
    last ``window_s`` (its ``Retry-After``), doubled for each 429 it asks for again sooner, up to ``max_s``.
    A connection is the peer's (host, port) of the ASGI scope; admitting it forgets it. At most ``keep``
    connections are remembered (the oldest quiet ones are forgotten first)."""

    def __init__(self, first_s: float, max_s: float, window_s: float, keep: int = 4096):
        self.first_s, self.max_s, self.window_s, self.keep = first_s, max(max_s, first_s), window_s, keep
        self._last: dict[Any, tuple[float, float]] = {}  # connection -> (time of its last 429, its pause)

    def delay(self, conn: Any, now: float) -> float:
        last = self._last.get(conn)
        pause = self.first_s if last is None or now - last[0] > self.window_s else min(last[1] * 2, self.max_s)
        if last is None and len(self._last) >= self.keep:
            self._forget(now)
        self._last[conn] = (now, pause)
        return pause

    def admitted(self, conn: Any) -> None:
        if self._last:
            self._last.pop(conn, None)

    def _forget(self, now: float) -> None:
        quiet = [c for c, (t, _) in self._last.items() if now - t > self.window_s]
        for c in quiet or list(self._last)[: self.keep // 2]:
            del self._last[c]


def surrogate_field(value: Any, path: tuple = ()) -> str | None:
    """Dotted path of the first string (or key) holding a lone surrogate, "" for the top level."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ".".join(map(str, path))
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            hit = surrogate_field(k, path + (k,)) if isinstance(k, str) else None
            if hit is None:
                hit = surrogate_field(v, path + (k,))
            if hit is not None:
                return hit
    elif isinstance(value, list):
        for i, v in enumerate(value):
            hit = surrogate_field(v, path + (i,))
            if hit is not None:
                return hit
    return None


class EdgeGuard:
    """Pure ASGI middleware: header and body limits, admission control, valid Unicode (module docstring)."""

    def __init__(self, app: Any, settings: Settings, metrics: Any = None):
        self.app = app
        self.s = settings
        self.metrics = metrics
        self.in_flight = {"ranking": 0, "other": 0}
        self.limits = {"ranking": settings.max_in_flight, "other": settings.max_in_flight_other}
        payload = orjson.dumps(error_body("overloaded", "too many requests in flight; retry later", None))
        self._shed_start = {"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"retry-after", str(settings.retry_after_s).encode())]}
        self._shed_body = {"type": "http.response.body", "body": payload}
        self.pacer = ShedPacer(settings.shed_delay_ms / 1000.0, settings.shed_delay_max_ms / 1000.0,
                               float(settings.retry_after_s))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[ARRIVAL] = time.perf_counter()
        s = self.s
        path = scope.get("path", "")
        if sum(len(k) + len(v) for k, v in scope.get("headers", ())) > s.max_header_bytes:
            await self._refuse(send, 431, "headers_too_large",
                               f"request headers larger than {s.max_header_bytes} bytes", "headers")
            return
        cls = admission_class(path)
        if cls is not None and self.in_flight[cls] >= self.limits[cls]:
            await self._shed(cls, scope.get("client"), send)
            return
        if cls is not None:
            scope[AHEAD] = self.in_flight[cls]
            self.in_flight[cls] += 1
            self.pacer.admitted(scope.get("client"))
        try:
            receive = await self._checked_body(scope, receive, send, path)
            if receive is not None:
                await self.app(scope, receive, send)
        finally:
            if cls is not None:
                self.in_flight[cls] -= 1

    async def _shed(self, cls: str, conn: Any, send) -> None:
        """The 429 of a request over the in-flight limit: prebuilt bytes, a prebound counter, no body read,
        no log line; sent after the connection's pause (:class:`ShedPacer`: an event-loop timer holding no
        slot), so a client that retries at once is paced instead of keeping the worker's HTTP parser -- and
        its own CPU, on a shared machine -- busy against the requests it admitted."""
        if self.metrics is not None:
            self.metrics.shed.labels(cls, "in_flight").inc()
        pause = self.pacer.delay(conn, time.perf_counter()) if conn is not None else self.pacer.first_s
        if pause > 0:
            await asyncio.sleep(pause)
        await send(self._shed_start)
        await send(self._shed_body)

    async def _checked_body(self, scope, receive, send, path: str):
        """A receive that replays the (limited, checked) body, or None when a refusal was sent."""
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return receive
        limit = body_limit(path, self.s)
        headers = dict(scope.get("headers", ()))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._refuse(send, 400, "invalid_request", "Content-Length is not a number", "Content-Length")
                return None
            if declared > limit:
                await self._refuse(send, 413, "payload_too_large", f"request body larger than {limit} bytes", "body")
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, 413, "payload_too_large", f"request body larger than {limit} bytes", "body")
                return None
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        if headers.get(b"content-type", b"").startswith(b"application/json") and _SURROGATE.search(body):
            field = self._surrogate(body)
            if field is not None:
                await self._refuse(send, 422, "invalid_request",
                                   f"{field or 'body'}: text must be valid Unicode (lone surrogate)", field or "body")
                return None
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # the app waits for a disconnect after the body
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    @staticmethod
    def _surrogate(body: bytes) -> str | None:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None  # not JSON: the route's own parser answers 422
        return surrogate_field(doc)

    @staticmethod
    async def _refuse(send, status: int, code: str, message: str, field: str | None,
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:
        payload = orjson.dumps(error_body(code, message, field))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                   *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
