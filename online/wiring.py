"""Explicit wiring: the typed container of everything a request can use, built once by
:func:`online.app.create_app`, and the FastAPI dependencies that hand it to routes (the container, the
admin check). No route reaches into ``app.state`` for anything else.

    >>> svc: Services = services(request)      # or: svc: Annotated[Services, Depends(services)]
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from fastapi import Depends, Header, Request

from gpu_core.errors import JaikodError
from gpu_core.settings import Settings

if TYPE_CHECKING:
    from online.bus import EventBus
    from online.canary import CanaryController
    from online.metrics import Metrics
    from online.monitoring import FallbackAlerter, FeedRecorder
    from online.pipeline import RankingPipeline
    from online.state import ServiceState

T = TypeVar("T")


class AdminAuthError(JaikodError):
    http_status = 403


class Lazy(Generic[T]):
    """A service built on first use (once, even under concurrent first requests). With ``retry_s``, a
    failed build raises once from :meth:`get_or_none`, which then answers ``None`` until ``retry_s`` has
    passed and it tries again."""

    def __init__(self, factory: Callable[[], T], retry_s: float | None = None):
        self.factory = factory
        self.retry_s = retry_s
        self._value: T | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self.factory()
        return self._value

    def get_or_none(self) -> T | None:
        """The service; None while a recent failure is remembered (``retry_s``); a new failure raises."""
        if self._value is not None:
            return self._value
        if self._failed_at is not None and self.retry_s is not None and time.monotonic() - self._failed_at < self.retry_s:
            return None
        try:
            return self()
        except Exception:
            self._failed_at = time.monotonic()
            raise

    def loaded(self) -> bool:
        return self._value is not None

    def set(self, value: T | None) -> None:
        """Replace the service (None: build it again on the next use)."""
        with self._lock:
            self._value, self._failed_at = value, None


@dataclass
class Services:
    """What the routes of one app use. ``state`` and ``pipeline`` are set at start-up (lifespan) when the
    app was created without a prebuilt state."""

    settings: Settings
    metrics: Metrics
    state: ServiceState | None = None
    pipeline: RankingPipeline | None = None
    canary: CanaryController | None = None
    alerter: FallbackAlerter | None = None
    feed_recorder: FeedRecorder | None = None
    text: Lazy[Any] | None = None  # online.services.text.TextService
    vision: Lazy[Any] | None = None  # online.services.vision.VisionService
    event_bus: Lazy[EventBus] | None = None
    readiness: dict[str, Callable[[], dict]] = field(default_factory=dict)  # AI service -> its /readyz line
    extras: dict[str, Any] = field(default_factory=dict)  # per-router caches keyed by their module

    def arm_for(self, user_id: int) -> str:
        return self.canary.arm_for(user_id) if self.canary is not None else "production"


def services(request: Request) -> Services:
    """FastAPI dependency: the app's services container."""
    return request.app.state.services


def require_admin(request: Request, x_admin_token: Annotated[str | None, Header()] = None) -> None:
    """FastAPI dependency: the admin token (header ``X-Admin-Token``), compared in constant time."""
    expected = services(request).settings.admin_token
    try:
        ok = bool(expected and x_admin_token and secrets.compare_digest(x_admin_token.encode(), expected.encode()))
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise AdminAuthError("admin token missing or wrong (header X-Admin-Token)", field="X-Admin-Token")


Admin = Annotated[None, Depends(require_admin)]
Svc = Annotated[Services, Depends(services)]
