"""Language service: ``POST /v1/analyze-text`` and ``POST /v1/auto-reply``.

``TextService`` loads the USE embedder, the profanity lists and the classifier heads once; the router is a
FastAPI ``APIRouter`` built by :func:`text_router` (the app mounts it and maps ``JaikodError`` to
``{"error": {"code", "message", "field"}}``). Chat text is never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from engines.text.analyzer import TextAnalyzer
from engines.text.embedder import TextEmbedder, get_embedder
from engines.text.heads import ClassifierHeads, TextModelError
from engines.text.reply import ListingFacts, LLMReplyAdapter, ReplySuggester
from engines.text.settings import TextSettings, get_text_settings
from gpu_core.errors import JaikodError
from gpu_core.settings import get_settings

log = logging.getLogger(__name__)


class TextInputError(JaikodError):
    """The caller sent text the language service cannot take (online layer)."""

    http_status = 422


# --- request / response models -------------------------------------------------------------------------
class AnalyzeTextRequest(BaseModel):
    text: str
    context: str = "listing"


class ProhibitedItem(BaseModel):
    item: str
    score: float


class DiversionSpan(BaseModel):
    kind: Literal["line_id", "phone", "email", "url", "payment_outside"]
    span: list[int] = Field(description="[start, end) character offsets in the submitted text")


class AnalyzeTextResponse(BaseModel):
    offensive: float
    prohibited: list[ProhibitedItem]
    diversion: list[DiversionSpan]
    safety_score: float
    model_version: str


class Turn(BaseModel):
    role: str
    text: str


class AutoReplyRequest(BaseModel):
    conversation: list[Turn]
    listing: dict | None = None
    listing_id: str | int | None = None


class AutoReplyResponse(BaseModel):
    replies: list[str]
    language: Literal["th", "en"]
    intent: str
    source: str


class TextService:
    """Models load once in ``__init__``; methods validate input and raise :class:`TextInputError`."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        listing_lookup: Callable[[str], dict | None] | None = None,
        settings: TextSettings | None = None,
        embedder: TextEmbedder | None = None,
    ):
        self.settings = settings or get_text_settings()
        model_dir = Path(model_dir or self.settings.model_dir or get_settings().artifacts_dir / "text")
        self.model_dir = model_dir
        self.heads_error: str | None = None
        try:
            heads: ClassifierHeads | None = ClassifierHeads.load(model_dir)
        except TextModelError as e:
            heads = None  # lexicon rules, detectors and word lists still answer; model_version says "rules-only"
            self.heads_error = str(e)
            log.warning("text heads not usable; serving rules only", extra={"model_dir": str(model_dir)})
        self.embedder = embedder or get_embedder()
        self.analyzer = TextAnalyzer(heads, self.embedder, settings=self.settings)
        missing = self.analyzer.missing_head_items()
        if heads is not None and missing:
            log.warning("text heads predate the taxonomy; rules alone cover some items", extra={"items": missing})
        llm = LLMReplyAdapter(self.settings.llm_url, self.settings.llm_timeout_s) if self.settings.llm_url else None
        self.suggester = ReplySuggester(self.embedder, llm)
        self.listing_lookup = listing_lookup

    @property
    def model_version(self) -> str:
        return self.analyzer.model_version

    def status(self) -> dict:
        """What answers ``/v1/analyze-text`` (for ``/readyz``): never a silent downgrade to rules only."""
        a = self.analyzer
        return {"model_version": self.model_version, "heads": "loaded" if a.heads is not None else "missing",
                "heads_error": self.heads_error, "rules": a.lexicon.version,
                "items_without_head": a.missing_head_items(), "degraded": a.heads is None or bool(a.missing_head_items())}

    def _check_text(self, text: str, field: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise TextInputError("text must be a non-empty string", field=field)
        if len(text) > self.settings.max_text_chars:
            raise TextInputError(f"text longer than {self.settings.max_text_chars} characters", field=field)
        if _has_surrogate(text):
            raise TextInputError("text is not valid Unicode (a lone surrogate)", field=field)

    def analyze(self, text: str, context: str = "listing") -> dict:
        self._check_text(text, "text")
        if context not in ("listing", "chat"):
            raise TextInputError("context must be 'listing' or 'chat'", field="context")
        out = self.analyzer.analyze(text, context).as_dict()
        out["model_version"] = self.model_version
        return out

    def auto_reply(self, conversation: list[dict], listing: dict | None = None,
                   listing_id: str | int | None = None) -> dict:
        if not conversation:
            raise TextInputError("conversation must have at least one message", field="conversation")
        if len(conversation) > self.settings.max_conversation_turns:
            raise TextInputError("conversation too long", field="conversation")
        for i, turn in enumerate(conversation):
            if turn.get("role") not in ("buyer", "seller"):
                raise TextInputError("role must be 'buyer' or 'seller'", field=f"conversation.{i}.role")
            self._check_text(turn.get("text", ""), f"conversation.{i}.text")
        if isinstance(listing_id, str) and _has_surrogate(listing_id):
            raise TextInputError("listing_id is not valid Unicode (a lone surrogate)", field="listing_id")
        if listing is None:
            if listing_id is None:
                raise TextInputError("give listing facts or a listing_id", field="listing_id")
            if self.listing_lookup is None:
                raise TextInputError("listing lookup is not available; send the listing facts", field="listing_id")
            listing = self.listing_lookup(str(listing_id))
            if listing is None:
                raise TextInputError(f"unknown listing {listing_id}", field="listing_id")
        bad = _surrogate_path(listing, "listing")
        if bad is not None:
            raise TextInputError("listing facts are not valid Unicode (a lone surrogate)", field=bad)
        try:
            facts = ListingFacts.from_dict(listing)
        except (TypeError, ValueError) as e:
            raise TextInputError(f"listing facts malformed: {e.__class__.__name__}", field="listing") from e
        s = self.suggester.suggest(conversation, facts)
        return {"replies": s.replies, "language": s.language, "intent": s.intent, "source": s.source}


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate_path(value, path: str) -> str | None:
    """The dotted path of the first string under ``value`` holding a lone surrogate, else ``None``."""
    if isinstance(value, str):
        return path if _has_surrogate(value) else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        if isinstance(k, str) and _has_surrogate(k):
            return f"{path}.{k.encode('utf-8', 'replace').decode()}"
        found = _surrogate_path(v, f"{path}.{k}")
        if found is not None:
            return found
    return None


def text_readiness(service: TextService | Callable[[], TextService], loaded: Callable[[], bool] | None = None) -> dict:
    """The language service's line in ``/readyz``; does not load the models if they are not loaded yet."""
    if isinstance(service, TextService):
        return {"loaded": True, **service.status()}
    if loaded is not None and not loaded():
        return {"loaded": False}
    return {"loaded": True, **service().status()}


def text_router(service: TextService | Callable[[], TextService]) -> APIRouter:
    """Routes over a service (or a zero-argument factory called on first use)."""
    router = APIRouter(tags=["text"])
    holder: dict[str, TextService] = {}

    def svc() -> TextService:
        if "s" not in holder:
            holder["s"] = service if isinstance(service, TextService) else service()
        return holder["s"]

    @router.post("/v1/analyze-text", response_model=AnalyzeTextResponse)
    def analyze_text(req: AnalyzeTextRequest) -> dict:
        return svc().analyze(req.text, req.context)

    @router.post("/v1/auto-reply", response_model=AutoReplyResponse)
    def auto_reply(req: AutoReplyRequest) -> dict:
        return svc().auto_reply([t.model_dump() for t in req.conversation], req.listing, req.listing_id)

    return router
