"""``POST /v1/fraud-score``: planted fraudulent listings score above honest ones, with reasons."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient


def _seller(r, sid: int, verified: bool, reports: int, banned: bool = False, age_days: int = 700) -> None:
    import time

    r.hset(f"jk:seller:{sid}", mapping={"verified_id": int(verified), "reports": reports, "banned": int(banned),
                                        "joined_ms": int((time.time() - age_days * 86400) * 1000)})


def test_fraud_score_ranks_planted_above_honest(served_world, monkeypatch):
    from engines.text.settings import reset_text_settings
    from gpu_core.settings import reset_settings
    from online.app import create_app

    monkeypatch.setenv("JAIKOD_LISTING_TEXT_TIMEOUT_MS", "0.001")  # intake without waiting for the text model
    reset_settings()
    reset_text_settings()
    r = redis.Redis.from_url(served_world.redis_url)
    _seller(r, 900_001, True, 0)
    _seller(r, 900_002, False, 6)
    _seller(r, 900_003, True, 0, banned=True)
    with TestClient(create_app(refresher=False, services=True)) as c:
        mirror = c.app.state.services.state.mirror
        honest, fraud = [], []
        for i, (title, price) in enumerate([("Canon EOS 600D body", 7000), ("Nike Air Zoom size 42", 2200),
                                            ("IKEA Poang armchair", 2500)]):
            cat = ["electronics", "fashion", "furniture"][i]
            honest.append(c.post("/v1/listings", json={"seller_id": 900_001, "title": title, "price_thb": price,
                                                       "category": cat}).json()["listing_id"])
        planted = [
            {"seller_id": 900_002, "title": "iPhone 15 Pro ของแท้ แอดไลน์ 0 8 1 2 3 4 5 6 7 8", "price_thb": 900,
             "category": "mobile_phones"},
            {"seller_id": 900_003, "title": "MacBook Air M2", "price_thb": 3000, "category": "electronics"},
            {"seller_id": 900_001, "title": "PS5 new, transfer first to my bank account", "price_thb": 1500,
             "category": "electronics"},
        ]
        fraud = [c.post("/v1/listings", json=p).json()["listing_id"] for p in planted]
        scores = {lid: c.post("/v1/fraud-score", json={"listing_id": lid}).json() for lid in honest + fraud}
        assert min(scores[f]["score"] for f in fraud) > max(scores[h]["score"] for h in honest)
        assert all(scores[f]["score"] >= 0.6 for f in fraud) and all(scores[h]["score"] < 0.3 for h in honest)
        sig = {s["signal"] for s in scores[fraud[0]]["reasons"]}
        assert {"seller", "price", "diversion"} <= sig
        assert any("banned seller" == s["reason"] for s in scores[fraud[1]]["reasons"])
        notes = [s["reason"] for s in scores[honest[0]]["reasons"] if s["signal"] == "note"]
        assert any("duplicate-image signal skipped" in n for n in notes)
        # a live product of the snapshot is scored on demand too
        pid = int(mirror.ids[0])
        live = c.post("/v1/fraud-score", json={"listing_id": pid}).json()
        assert live["source"] == "snapshot" and 0.0 <= live["score"] <= 1.0
        assert c.post("/v1/fraud-score", json={"listing_id": 123456789}).status_code == 404
    reset_settings()
