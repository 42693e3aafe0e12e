"""No plaintext PII at rest: names, phones, Line IDs, e-mails and chat text are seeded through the event
API (client-chosen ids), the language endpoints and the bad-input paths of a real uvicorn over a real
Redis that keeps an AOF and an uncompressed RDB; a real stream processor applies and archives the events.
Then every log line, every file under the home and the lake, every Redis key and value (DUMP) and the
AOF/RDB files are scanned: 0 hits.

Search text is seeded too: a name, a phone and an e-mail typed as ``/v1/search`` queries (replay log
sampled at 100 %) and carried by the events that report those searches (bus, session query in Redis, the
lake's ``query`` column): the stores keep the query's stored form (engines.search.stored), never the text.
Faces: an eKYC upload (ID photo + selfies) with encrypted retention on; neither the uploaded bytes nor a
raw pixel block of the face is anywhere in plaintext, and the one retained file decrypts back (AES-GCM,
purged after 30 days by the vault). Poison: two events written straight onto the bus (around the event
API's checks) carry the phone, the e-mail and the Line ID in their ids, session id and query text; the
processor dead-letters them, the dead-letter stream keeps them sealed (the scan finds nothing), and
``jaikod stream dead-letter replay`` puts the exact bytes back on the bus."""

from __future__ import annotations

import io
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
import redis
from PIL import Image

from gpu_core.settings import Settings
from tests.reliability.conftest import ROOT, LiveServer, server_env
from tests.support.synthetic import draw_face


def _seeds() -> dict[str, str]:
    tag = secrets.token_hex(3)
    return {"name": f"Somchai Jaidee{tag}", "phone": f"08{secrets.randbelow(10**8):08d}",
            "line_id": f"line{tag}xyz", "email": f"somchai.{tag}@example.co.th",
            "chat": f"transfer to kbank account quick {tag} please"}


@pytest.fixture()
def aof_redis(tmp_path, tiny_world):
    """A private Redis keeping an AOF (fsync always) and an uncompressed RDB, holding the tiny world."""
    from tests.conftest import RedisServer

    data = tmp_path / "redis"
    data.mkdir()
    server = RedisServer(data, ("--appendonly", "yes", "--appendfsync", "always", "--rdbcompression", "no"))
    pipe = server.client().pipeline(transaction=False)
    for k, (pttl, payload) in tiny_world.dump.items():
        pipe.restore(k, max(int(pttl), 0), payload, replace=True)
    pipe.execute()
    yield server.url, data
    server.stop()


def _hits(blob: bytes, seeds: dict[str, str]) -> list[str]:
    low = blob.lower()
    return [k for k, v in seeds.items() if v.lower().encode() in low]


def test_seeded_pii_is_nowhere_at_rest(tmp_path, tiny_world, aof_redis):
    url, data = aof_redis
    seeds = _seeds()
    face = draw_face(int(seeds["phone"][-4:]))
    face_png = _png(face)
    selfie_pngs = [_png(draw_face(int(seeds["phone"][-4:]), yaw=y)) for y in (0.6, -0.6)]
    blobs = {f"face upload bytes {i}": face_png[o:o + 48] for i, o in enumerate(range(64, len(face_png) - 48,
                                                                                         len(face_png) // 5))}
    blobs["face pixel block"] = face[150, 100:220].tobytes()  # a raw RGB row across the face
    blobs["selfie upload bytes"] = selfie_pngs[0][100:148]
    lake = tmp_path / "lake"
    stream = Settings.model_fields["event_stream"].default
    env = server_env(tiny_world, redis_url=url, lake=lake, replay_sample_rate=1.0, log_requests="true")
    env["JAIKOD_VISION_RETENTION_ENABLED"] = "true"
    env["JAIKOD_REDIS_URL"] = url
    server = LiveServer(env, tmp_path / "uvicorn.log")
    try:
        server.wait_ready()
        now = int(time.time() * 1000)
        with httpx.Client(base_url=server.base, timeout=60) as c:
            events = [{"event_id": f"{seeds['phone']}-{i}", "event_type": "click", "ts": now - i, "user_id": 5,
                       "product_id": 1 + i, "session_id": seeds["email"][:64]} for i in range(5)]
            events.append({"event_id": f"{seeds['line_id']}.1", "event_type": "impression", "ts": now,
                           "user_id": 6, "product_id": 2, "session_id": seeds["line_id"]})
            r = c.post("/v1/events", json={"events": events})
            assert r.status_code == 200, r.text
            text = f"Hi I am {seeds['name']}, call {seeds['phone']} or line {seeds['line_id']}, {seeds['email']}"
            r = c.post("/v1/analyze-text", json={"text": text, "context": "chat"})
            assert r.status_code in (200, 503), r.text
            r = c.post("/v1/auto-reply", json={"conversation": [{"role": "buyer", "text": f"{text} {seeds['chat']}"}],
                                               "listing": {"title": "iPhone 12", "price_thb": 9000}})
            assert r.status_code in (200, 422, 503), r.text
            # bad input carrying PII: refused, and the refusal is not logged with it
            for body in ({"user_id": seeds["phone"]}, {"user_id": 1, "device_type": seeds["email"]}):
                assert c.post("/v1/feed", json=body).status_code == 422
            assert c.post("/v1/feed", json={"user_id": 5}).status_code == 200
            bad_admin = c.get("/v1/admin/overrides", headers={"X-Admin-Token": seeds["name"]})
            assert bad_admin.status_code == 403
            # search text: typed as queries, then reported by the client with the impressions it showed
            for q in (seeds["name"], f"iphone {seeds['phone']}", seeds["email"], f"sofa {seeds['line_id']}"):
                r = c.post("/v1/search", json={"user_id": 5, "query": q, "limit": 5})
                assert r.status_code == 200, r.text
                assert "q1:" not in r.text  # the response says what was understood, not the stored form
                events = [{"event_id": f"s{secrets.token_hex(4)}", "event_type": "impression", "ts": now,
                           "user_id": 5, "product_id": 1 + i, "query": q, "position": i} for i in range(3)]
                assert c.post("/v1/events", json={"events": events}).status_code == 200
            assert c.post("/v1/feed", json={"user_id": 5}).status_code == 200  # the session query seasons it
            # a face: ID photo + selfies, kept only encrypted (retention on)
            r = c.post("/v1/ekyc-match", files=[("id_card", ("id.png", face_png, "image/png")),
                                                *[("selfies", (f"s{i}.png", f, "image/png"))
                                                  for i, f in enumerate(selfie_pngs)]])
            assert r.status_code == 200, r.text
            assert r.json()["retained"] is True
        # poison carrying PII, as an old writer or a hand-made XADD would put it on the bus
        poison = [orjson.dumps({"event_id": f"{seeds['phone']}-poison", "event_type": "click", "ts": now,
                                "user_id": 5, "product_id": 2**63, "session_id": seeds["email"][:64],
                                "query": f"call {seeds['phone']} {seeds['email']}"}),
                  f'{{"event_id": "{seeds["line_id"]}", "chat": "{seeds["chat"]}'.encode()]  # not JSON
        bus = redis.Redis.from_url(url)
        for payload in poison:
            bus.xadd(stream, {"e": payload})
        proc_env = {**env, "JAIKOD_AOF_REWRITE_INTERVAL_S": "0.3", "JAIKOD_STREAM_ARCHIVE_INTERVAL_S": "0.2"}
        out = subprocess.run([sys.executable, "-m", "online.stream", "--consumer", "pii", "--max-idle-s", "2"],
                             env=proc_env, cwd=ROOT, capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        (tmp_path / "stream.log").write_bytes(out.stdout + out.stderr)
    finally:
        server.stop()
    r = redis.Redis.from_url(url)
    assert r.xlen(stream) == 0  # applied events are trimmed (poison too, once dead-lettered)
    from gpu_core.streams import DEAD_LETTER, dead_letter_payload

    dead = r.xrange(DEAD_LETTER)
    assert len(dead) == len(poison)
    # the dead letters do hold the PII (so the scan below looks at it), sealed
    home = Settings(home=tiny_world.home, pii_key=None)  # the deployment's key: <home>/pii_key
    assert sorted(_hits(b"".join(dead_letter_payload(f, home) for _, f in dead), seeds)) == \
        ["chat", "email", "line_id", "phone"]
    for _ in range(200):
        if r.info("persistence")["aof_rewrite_in_progress"] == 0:
            break
        time.sleep(0.05)
    r.save()  # the RDB too (uncompressed, so a plaintext value would show)
    found: dict[str, list[str]] = {}

    def scan(where: str, blob: bytes) -> None:
        h = _hits(blob, seeds) + [k for k, v in blobs.items() if v in blob]
        if h:
            found[where] = h

    for key in r.scan_iter(count=1000):
        scan(f"redis key {key[:60]!r}", key)
        scan(f"redis value of {key[:60]!r}", r.dump(key) or b"")
    for root in (data, lake, tmp_path, Path(tiny_world.home)):
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size < 512 << 20:
                scan(str(path), path.read_bytes())
    assert any(data.rglob("*.aof")) and (data / "dump.rdb").exists()
    assert not found, found
    # the searches did reach every store, as their stored form (so the scan above looked at them)
    from gpu_core.replay_log import replay_key

    logged = r.keys(replay_key("*"))
    assert logged and any(b'["u"]' in (r.hget(k, "query") or b"") for k in logged)
    lake_queries = pq.read_table(lake / "events", columns=["query"])["query"].to_pylist()
    assert any(q and q.startswith("q1:") for q in lake_queries)
    # the dead letters replay: the exact poison bytes are back on the bus, the dead-letter stream is empty
    out = subprocess.run([sys.executable, str(ROOT / "jaikod_cli.py"), "stream", "dead-letter", "replay"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(f[b"e"] for _, f in r.xrange(stream)) == sorted(poison)
    assert r.xlen(DEAD_LETTER) == 0
    # the face upload was retained, encrypted: the one cold-storage file decrypts back to the bytes sent
    from engines.vision.vault import FaceVault

    retained = list(Path(tiny_world.home, "cold_storage", "ekyc").glob("*.bin"))
    assert len(retained) == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAIKOD_HOME", str(tiny_world.home))
        from engines.vision.config import reset_vision_settings
        from gpu_core.settings import reset_settings

        reset_settings()
        reset_vision_settings()
        try:
            assert FaceVault().open(retained[0])[0] == face_png
        finally:
            retained[0].unlink()
    reset_settings()
    reset_vision_settings()


def _png(img) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()
