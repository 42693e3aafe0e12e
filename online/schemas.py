"""HTTP request/response models of the ranking API (JSON is snake_case; ids are ints).

Numbers are strict at the edge: an id is a JSON integer in the int64 range (``"1"``, ``" 1 "``,
``true`` and ``1.0`` are refused with 422 naming the field), so nothing past the edge can overflow a
store's int64 column or key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from gpu_core.ids import ID_MAX, ID_MIN
from gpu_core.schema import DEVICE_TYPES

Id = Annotated[int, Strict(), Field(ge=ID_MIN, le=ID_MAX)]  # an id: a JSON integer in [0, 2**63 - 1]
Count = Annotated[int, Strict()]  # a count or position: a JSON integer, never "1" or true
Number = Annotated[float, Strict()]  # a JSON number (integers allowed), never "1.5" or true


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. invalid_request, not_found, overloaded")
    message: str
    field: str | None = Field(None, description="the request field at fault, when there is one")


class ErrorResponse(BaseModel):
    """Every error the API answers (4xx for the caller's mistakes, 429 when shed, 503 when not ready)."""

    error: ErrorDetail


class FeedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id = Field(description="user id (int64); unknown users get a cold-start feed")
    lat: Number | None = Field(None, ge=-90.0, le=90.0, description="request latitude (WGS84)")
    lon: Number | None = Field(None, ge=-180.0, le=180.0, description="request longitude (WGS84)")
    device_type: Literal[DEVICE_TYPES] | None = None  # type: ignore[valid-type]
    limit: Count = Field(20, ge=1, le=50, description="number of items (1..50)")

    @model_validator(mode="after")
    def _both_or_none(self):
        if (self.lat is None) != (self.lon is None):
            missing = "lon" if self.lon is None else "lat"
            raise ValueError(f"{missing}: lat and lon must be given together")
        return self


class SearchRequest(FeedRequest):
    query: str = Field(min_length=1, max_length=200, description=(
        "search text (Thai or English, 1..200 characters). Control, zero-width and lone-surrogate characters "
        "are dropped; a query left without text is a 422 naming `query`. Emoji-only or unknown words answer "
        "`no_match` with no items; condition words only (มือสอง, like new) answer `condition_only_query`."))

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        v = "".join(ch for ch in v if not 0xD800 <= ord(ch) <= 0xDFFF and (ch.isprintable() or ch.isspace()))
        if not v.strip():
            raise ValueError("query must contain text (it is empty, blank or only control characters)")
        return " ".join(v.split())


class Item(BaseModel):
    product_id: int
    seller_id: int
    position: int
    score: float
    sponsored: bool


class RankResponse(BaseModel):
    request_id: str
    model_version: str
    items: list[Item]
    fallbacks_used: list[str]
    timings_ms: dict[str, float]
    snapshot_version: str | None = None
    explanations: list[dict] | None = None
    query_understanding: dict | None = None  # search: normalised text, tagged terms, fixes, suggestion
    widened_radius_km: float | None = None  # search: every match lay beyond the user's distance (widened_radius)


class OverrideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["boost", "unboost", "ban_category", "unban_category", "ban_seller", "unban_seller",
                    "sponsor", "unsponsor"]
    product_id: Id | None = None
    seller_id: Id | None = None
    category: str | None = Field(None, max_length=64)
