"""The FastAPI application: ``create_app()`` builds the typed services container
(:class:`online.wiring.Services`), the routes and the error handlers.

    uvicorn --factory online.app:create_app

Every module of the service is imported at start-up: a missing or broken module of the project fails
the start loudly instead of silently dropping an API.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI

from gpu_core.device import backend
from gpu_core.registry import Registry
from gpu_core.settings import Settings, get_settings
from online.api import router
from online.canary import CanaryController
from online.edge import EdgeGuard
from online.errors import install_error_handlers, install_openapi
from online.events import make_event_bus
from online.events import router as events_router
from online.metrics import Metrics
from online.monitoring import install_monitoring
from online.pipeline import RankingPipeline
from online.services.fraud import fraud_router
from online.services.listings import listings_router
from online.services.moderation import moderation_router
from online.services.text import TextService, text_router
from online.services.vision import get_service as vision_service
from online.services.vision import router as vision_router
from online.state import ServiceState
from online.wiring import Lazy, Services

log = logging.getLogger(__name__)
VISION_RETRY_S = 60.0  # a failed vision load (models/heads missing) is retried after this long


def create_app(state: ServiceState | None = None, *, settings: Settings | None = None, refresher: bool = True,
               services: bool = True) -> FastAPI:
    settings = settings or (state.settings if state is not None else get_settings())
    svc = Services(settings=settings, metrics=Metrics(), state=state,
                   pipeline=RankingPipeline(state) if state is not None else None,
                   event_bus=Lazy(lambda: make_event_bus(settings)))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if svc.state is None:
            svc.state = ServiceState(settings, backend(), Registry(settings=settings))
            svc.pipeline = RankingPipeline(svc.state)
        if svc.state.mirror is None:
            svc.state.startup()
        if refresher:
            svc.state.start_refresher(settings.refresh_interval_s)
        yield
        if svc.canary is not None:
            svc.canary.stop()
        svc.state.stop()

    app = FastAPI(title="JaiKod Intelligence Layer", version="0.1.0", lifespan=lifespan)
    app.state.services = svc
    install_error_handlers(app)
    app.include_router(router)
    if services:
        _mount_services(app, svc)
    app.add_middleware(EdgeGuard, settings=settings, metrics=svc.metrics)  # outermost: before any work
    install_openapi(app)
    return app


def _mount_services(app: FastAPI, svc: Services) -> None:
    """The event API, the canary, monitoring and the shared AI services (language and vision load lazily
    on their first request; one load even when the first requests arrive together)."""
    svc.canary = CanaryController(svc)
    install_monitoring(app, svc)
    svc.text = Lazy(TextService)
    svc.vision = Lazy(vision_service, retry_s=VISION_RETRY_S)
    app.include_router(events_router)
    app.include_router(text_router(svc.text))
    app.include_router(listings_router())
    app.include_router(moderation_router())
    app.include_router(fraud_router())
    app.include_router(vision_router)


def serve() -> None:
    from online.server import serve as run

    run(get_settings())
