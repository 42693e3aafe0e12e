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
from online.services.text import TextService, text_readiness, text_router
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
        svc.state.models.on_refused = svc.state.indexes.on_refused = (
            lambda kind: svc.metrics.artifacts_refused.labels(kind).inc())  # a corrupt artifact was refused
        if svc.state.mirror is None:
            svc.state.startup()
        if not svc.state.warm and svc.state.mirror is not None:
            svc.pipeline.warm_up()  # /readyz says ready only after a search and a feed ran every stage
        svc.state.on_snapshot = svc.pipeline.warm_up  # and again for each new snapshot's indexes
        if refresher:
            svc.state.start_refresher(settings.refresh_interval_s)
        metrics_server = None
        if settings.metrics_port:  # this worker's own /metrics (Prometheus scrapes each worker)
            from prometheus_client import start_http_server

            metrics_server, _ = start_http_server(settings.metrics_port, settings.host, registry=svc.metrics.registry)
        yield
        if metrics_server is not None:
            metrics_server.shutdown()
        if svc.canary is not None:
            svc.canary.stop()
        svc.state.stop()

    app = FastAPI(title="JaiKod Intelligence Layer", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.services = svc
    _mount_docs(app)
    install_error_handlers(app)
    app.include_router(router)
    if services:
        _mount_services(app, svc)
    app.add_middleware(EdgeGuard, settings=settings, metrics=svc.metrics)  # outermost: before any work
    install_openapi(app)
    return app


def _mount_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI's assets from the ``swagger-ui-bundle`` package (no CDN: works offline)."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")


def _mount_services(app: FastAPI, svc: Services) -> None:
    """The event API, the canary, monitoring and the shared AI services (language and vision load lazily
    on their first request; one load even when the first requests arrive together)."""
    svc.canary = CanaryController(svc)
    install_monitoring(app, svc)
    svc.text = Lazy(lambda: TextService(listing_lookup=lambda lid: _listing_facts(svc, lid)))
    svc.readiness["text"] = lambda: text_readiness(svc.text, svc.text.loaded)
    svc.vision = Lazy(vision_service, retry_s=VISION_RETRY_S)
    app.include_router(events_router)
    app.include_router(text_router(svc.text))
    app.include_router(listings_router())
    app.include_router(moderation_router())
    app.include_router(fraud_router())
    app.include_router(vision_router)


def _listing_facts(svc: Services, listing_id: str) -> dict | None:
    """The auto-reply's listing facts from the live catalogue or intake (None: unknown listing)."""
    from online.catalogue import listing_record

    try:
        rec = listing_record(svc.state.redis, svc.state.catalogue, int(listing_id))
    except ValueError:
        return None
    if rec is None:
        return None
    return {"title": rec.get("title"), "price_thb": rec.get("price_thb"), "available": rec.get("status") == "live",
            "condition": rec.get("condition_grade")}


def serve(settings: Settings | None = None) -> None:
    """Serve the app with ``settings`` (default: the process's) — what ``jaikod serve`` runs."""
    from online.server import serve as run

    run(settings or get_settings())
