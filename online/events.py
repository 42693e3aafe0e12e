"""``POST /v1/events``: a batch of marketplace events, validated, appended to the event bus, and
acknowledged only after the append succeeded. A duplicate ``event_id`` is accepted and counted once.

Event JSON (ids are ints except the string ids; ``ts`` is epoch milliseconds or ISO-8601 with zone):
``{event_id, event_type: impression|click|add_to_cart|order, ts, user_id, product_id, request_id?,
position?, model_version?, session_id?, device_type?, query?, in_stock?, boosted?}``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Literal

import redis
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engines.search.stored import redact
from gpu_core.errors import JaikodError
from gpu_core.redis_client import connect
from gpu_core.schema import DEVICE_TYPES, EVENT_TYPES
from gpu_core.settings import Settings
from online.bus import EventBus, make_bus
from online.schemas import Count, Id
from online.wiring import Services, Svc

log = logging.getLogger(__name__)
router = APIRouter()

MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_FUTURE_MS = 24 * 3600 * 1000  # a device clock may run ahead, not by more than a day
MAX_EVENTS = 5000


class EventBusUnavailable(JaikodError):
    http_status = 503


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    event_type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    ts: int = Field(description="epoch milliseconds (or ISO-8601 with time zone)")
    user_id: Id
    product_id: Id
    request_id: str | None = Field(None, max_length=64)
    position: Count | None = Field(None, ge=0, le=10_000)
    model_version: str | None = Field(None, max_length=128)
    session_id: str | None = Field(None, max_length=64)
    device_type: Literal[DEVICE_TYPES] | None = None  # type: ignore[valid-type]
    query: str | None = Field(None, max_length=200)
    in_stock: bool | None = None  # listing state carried by the event (stock_status)
    boosted: bool | None = None  # listing boosted now (is_boosted_now)

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> int:
        if isinstance(v, bool) or v is None:
            raise ValueError("timestamp must be epoch milliseconds or ISO-8601")
        if isinstance(v, str):
            try:
                t = dt.datetime.fromisoformat(v.strip())
            except ValueError:
                raise ValueError(f"bad timestamp {v[:40]!r} (epoch ms or ISO-8601)") from None
            if t.tzinfo is None:
                raise ValueError("ISO-8601 timestamp needs a time zone (e.g. Z or +07:00)")
            ms = int(t.timestamp() * 1000)
        elif isinstance(v, int | float):
            if v != v or int(v) != v:
                raise ValueError("timestamp in epoch milliseconds must be an integer")
            ms = int(v)
        else:
            raise ValueError("timestamp must be epoch milliseconds or ISO-8601")
        if ms < MIN_TS_MS or ms > time.time() * 1000 + MAX_FUTURE_MS:
            raise ValueError(f"timestamp {ms} out of range (epoch ms after 2000-01-01, not in the future)")
        return ms


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    accepted: int
    duplicates: int


def make_event_bus(settings: Settings) -> EventBus:
    """The service's event bus (own Redis connection pool: appends may take longer than feature reads)."""
    client = connect(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    return make_bus(client, settings)


def _store_queries_understood(svc: Services, events: list[dict]) -> None:
    """Each event's ``query`` becomes its stored form (engines.search.stored): the bus, the online store
    and the lake never hold the text typed, only what the index understood of it (one plan per query)."""
    index = svc.state.indexes.keyword if svc.state is not None else None
    forms: dict[str, str] = {}
    for e in events:
        q = e.get("query")
        if q:
            if q not in forms:
                forms[q] = redact(q, index)
            e["query"] = forms[q]


@router.post("/v1/events", response_model=EventsResponse, tags=["events"])
def post_events(svc: Svc, body: EventsRequest) -> dict[str, int]:
    """Append events to the bus; ``accepted`` new ones, ``duplicates`` already seen (by event_id)."""
    events = [e.model_dump(exclude_none=True) for e in body.events]
    _store_queries_understood(svc, events)
    try:
        accepted, dup = svc.event_bus().publish(events)
    except (redis.RedisError, ConnectionError, OSError) as exc:
        log.warning("event append failed: %s", type(exc).__name__)
        raise EventBusUnavailable("event bus unavailable; retry the batch (events already appended count as duplicates)") from None
    svc.metrics.events.labels("accepted").inc(accepted)
    svc.metrics.events.labels("duplicate").inc(dup)
    return {"accepted": accepted, "duplicates": dup}
