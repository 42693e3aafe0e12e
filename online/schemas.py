"""HTTP request/response models of the ranking API (JSON is snake_case; ids are ints)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpu_core.schema import DEVICE_TYPES


class FeedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=0, description="user id (int); unknown users get a cold-start feed")
    lat: float | None = Field(None, ge=-90.0, le=90.0, description="request latitude (WGS84)")
    lon: float | None = Field(None, ge=-180.0, le=180.0, description="request longitude (WGS84)")
    device_type: Literal[DEVICE_TYPES] | None = None  # type: ignore[valid-type]
    limit: int = Field(20, ge=1, le=50, description="number of items (1..50)")

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


class OverrideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["boost", "unboost", "ban_category", "unban_category", "ban_seller", "unban_seller",
                    "sponsor", "unsponsor"]
    product_id: int | None = Field(None, ge=0)
    seller_id: int | None = Field(None, ge=0)
    category: str | None = None
