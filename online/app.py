"""The FastAPI application: ``create_app()`` wires state, pipeline, routes and error handlers.

    uvicorn --factory online.app:create_app
"""

from __future__ import annotations

import contextlib
import logging
import threading

from fastapi import FastAPI

from gpu_core.device import backend
from gpu_core.settings import get_settings
from online.api import router
from online.errors import install_error_handlers
from online.metrics import Metrics
from online.pipeline import RankingPipeline
from online.state import ServiceState

log = logging.getLogger(__name__)


def create_app(state: ServiceState | None = None, *, refresher: bool = True, services: bool = True) -> FastAPI:
    settings = get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        st = app.state.jaikod
        if st is None:
            from gpu_core.registry import Registry

            st = ServiceState(settings, backend(), Registry())
            app.state.jaikod = st
            app.state.pipeline = RankingPipeline(st)
        if st.mirror is None:
            st.startup()
        if refresher:
            st.start_refresher(settings.refresh_interval_s)
        yield
        st.stop()

    app = FastAPI(title="JaiKod Intelligence Layer", version="0.1.0", lifespan=lifespan)
    app.state.jaikod = state
    app.state.pipeline = RankingPipeline(state) if state is not None else None
    app.state.metrics = Metrics()
    app.state.readiness_reports = {}  # name -> () -> dict, one line each in /readyz (the AI services)
    install_error_handlers(app)
    app.include_router(router)
    if services:
        _mount_services(app)
    return app


def _mount_services(app: FastAPI) -> None:
    """The shared AI services (language, vision), loaded lazily on their first request."""
    try:  # the event API, the canary (staging arm + per-version tracking) and the fallback alert
        from online.canary import install_canary
        from online.events import router as events_router
        from online.monitoring import install_monitoring

        app.include_router(events_router)
        install_canary(app)
        install_monitoring(app)
    except ImportError as exc:  # pragma: no cover - optional at import time
        log.warning("event API / canary / monitoring not mounted: %s", exc)
    try:
        from online.services.text import TextService, text_readiness, text_router

        holder: dict = {}
        lock = threading.Lock()

        def text_service() -> TextService:
            if "svc" not in holder:
                with lock:  # one load (~10 s) even when the first requests arrive together
                    if "svc" not in holder:
                        holder["svc"] = TextService()
            return holder["svc"]

        text_service.loaded = lambda: "svc" in holder  # type: ignore[attr-defined]
        app.state.text_service = text_service  # shared with the listing intake
        app.state.readiness_reports["text"] = lambda: text_readiness(text_service, text_service.loaded)
        app.include_router(text_router(text_service))
    except ImportError as exc:  # pragma: no cover - optional at import time
        log.warning("language service not mounted: %s", exc)
    try:  # listing intake, moderation queue + admin console, fraud score
        from online.services.fraud import fraud_router
        from online.services.listings import listings_router
        from online.services.moderation import moderation_router

        app.include_router(listings_router())
        app.include_router(moderation_router())
        app.include_router(fraud_router())
    except ImportError as exc:  # pragma: no cover - optional at import time
        log.warning("listing intake / moderation / fraud not mounted: %s", exc)
    try:  # image analysis and eKYC (models load on the first request; heads from the registry)
        from online.services.vision import router as vision_router

        app.include_router(vision_router)
    except ImportError as exc:  # pragma: no cover - optional at import time
        log.warning("vision service not mounted: %s", exc)


def serve() -> None:
    from online.server import serve as run

    s = get_settings()
    run(s.host, s.port, s.workers)
