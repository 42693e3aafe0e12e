"""Post-hoc review of listings taken in while the language service was down or slow (``jaikod batch review``).

Reads the backlog stream (``jk:listings:review``, consumer group: a crashed reviewer's entries are taken
over), analyses the listings' text in one batch (:class:`engines.text.analyzer.TextAnalyzer`), sends unsafe
ones to the moderation queue and marks the others ``live``; each backlog entry is acknowledged only after
its listing was updated. Then it exports moderation labels that the lake does not have yet.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis

from gpu_core.feature_store import mark_live
from gpu_core.moderation import (
    ModerationQueue,
    ReviewBacklog,
    decode_hash,
    export_labels,
    listing_key,
    text_flags,
)
from gpu_core.redis_client import connect
from gpu_core.settings import get_settings

log = logging.getLogger(__name__)


@dataclass
class ReviewSummary:
    reviewed: int
    to_moderation: int
    live: int
    missing: int
    labels_exported: int
    seconds: float

    def as_rows(self) -> dict:
        return {"reviewed": self.reviewed, "to moderation": self.to_moderation, "live": self.live,
                "missing listings": self.missing, "labels exported": self.labels_exported,
                "seconds": round(self.seconds, 2)}


def _analyzer(model_dir: Path | None = None):
    from engines.text.analyzer import TextAnalyzer
    from engines.text.heads import ClassifierHeads, TextModelError

    model_dir = model_dir or get_settings().artifacts_dir / "text"
    try:
        heads = ClassifierHeads.load(model_dir)
    except TextModelError:
        log.warning("text heads not found; reviewing with rules and word lists only")
        heads = None
    return TextAnalyzer(heads)


def run_review(client: redis.Redis | None = None, lake: Path | None = None, batch_size: int = 256,
               analyzer=None, consumer: str | None = None) -> ReviewSummary:
    t0 = time.perf_counter()
    s = get_settings()
    r = client or connect(s.redis_url)
    backlog = ReviewBacklog(r)
    queue = ModerationQueue(r)
    consumer = consumer or f"review-{socket.gethostname()}-{os.getpid()}"
    analyzer = analyzer or _analyzer()
    reviewed = to_mod = live = missing = 0
    while True:
        entries = backlog.take(consumer, batch_size)
        if not entries:
            break
        found = []
        for eid, f in entries:
            h = decode_hash(r.hgetall(listing_key(f.get("listing_id", ""))))
            if h:
                found.append((eid, f["listing_id"], h))
            else:
                missing += 1
        texts = [f"{h.get('title', '')}\n{h.get('description', '')}".strip() or "-" for _, _, h in found]
        results = analyzer.analyze_batch(texts, "listing") if texts else []
        for (_eid, lid, h), res in zip(found, results, strict=True):
            d = res.as_dict()
            flags = text_flags(d) + orjson.loads(h.get("flags") or "[]")
            safety = min(float(d["safety_score"]), float(h["safety_score"]) if h.get("safety_score") else 1.0)
            update = {"text_checked": 1, "safety_score": f"{safety:.4f}", "flags": orjson.dumps(flags).decode()}
            if safety < s.safety_threshold and h.get("status") not in ("in_review", "rejected"):
                queue.enqueue(lid, "text", safety, flags)
                update["status"] = "in_review"
                to_mod += 1
            elif h.get("status") == "pending_review":
                update["status"] = "live"
                live += 1
            r.hset(listing_key(lid), mapping=update)
            if update.get("status") == "live":
                mark_live(r, int(lid))
        backlog.done([eid for eid, _ in entries])
        reviewed += len(found)
    exported = export_labels(r, lake or s.lake_dir)
    log.info("review backlog processed", extra={"reviewed": reviewed, "to_moderation": to_mod})
    return ReviewSummary(reviewed, to_mod, live, missing, exported, time.perf_counter() - t0)
