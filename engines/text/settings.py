"""Settings of the language service (env prefix ``JAIKOD_TEXT_``; the LLM endpoint also as ``JAIKOD_LLM_URL``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TextSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JAIKOD_TEXT_", extra="ignore", populate_by_name=True)

    model_dir: Path | None = Field(None, description="classifier heads; default <artifacts_dir>/text")
    prohibited_threshold: float = 0.5  # a prohibited item is reported at or above this combined score
    rule_term_score: float = 0.95  # score of a prohibited item named by a lexicon term
    rule_combo_score: float = 0.85  # score of a prohibited item found by a lexicon combination (two cues)
    head_alone_threshold: float = 0.97  # the embedding head alone (no lexicon cue) reports an item at or above this
    diversion_penalty: float = 0.7  # safety lost when a pattern detector finds a diversion attempt
    diversion_head_weight: float = 0.5  # weight of the diversion head when no pattern fired
    offensive_head_weight: float = 0.8  # weight of the offensive head next to the word lists
    train_missing_heads: bool = True  # `jaikod serve` trains the heads first when they are missing or stale
    max_text_chars: int = 5000
    max_conversation_turns: int = 50
    llm_url: str | None = Field(
        None, validation_alias=AliasChoices("JAIKOD_LLM_URL", "JAIKOD_TEXT_LLM_URL"),
        description="external LLM endpoint for auto-reply; off when unset",
    )
    llm_timeout_s: float = 2.0


@lru_cache(maxsize=1)
def get_text_settings() -> TextSettings:
    return TextSettings()


def reset_text_settings() -> None:
    get_text_settings.cache_clear()
