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
    # the embedding heads alone (no lexicon cue) report an item only when this is on, at or above the threshold.
    # Off by default: on the dev half of bench/data/text_eval.jsonl the template-trained heads alone had
    # precision 0.80-0.92 at thresholds 0.9-0.99 and added no true item the rules missed. The threshold also
    # gates the offensive head next to the word lists.
    head_alone_reports: bool = False
    head_alone_threshold: float = 0.97
    diversion_penalty: float = 0.7  # safety lost when a pattern detector finds a diversion attempt
    diversion_head_weight: float = 0.5  # weight of the diversion head when no pattern fired
    offensive_head_weight: float = 0.8  # weight of the offensive head next to the word lists
    offensive_threshold: float = 0.5  # an offensive score at or above this counts as offensive (bench, moderation)
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
