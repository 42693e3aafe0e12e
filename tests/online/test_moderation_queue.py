"""Moderation queue: durable across a service restart, every entry decided exactly once, labels stored."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from gpu_core.moderation import LABELS, QUEUE, DecisionConflict, ModerationQueue, label_key, read_labels

TOKEN = "test-admin-token"
H = {"X-Admin-Token": TOKEN}


@pytest.fixture()
def admin_env(served_world, monkeypatch, tmp_path):
    from gpu_core.settings import reset_settings

    monkeypatch.setenv("JAIKOD_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JAIKOD_LAKE", str(tmp_path / "lake"))  # labels go to a private lake
    reset_settings()
    yield served_world
    reset_settings()


def _app():
    from online.app import create_app

    return create_app(refresher=False, services=True)


def test_queue_survives_restart_nothing_lost_nothing_twice(admin_env, tmp_path):
    import redis

    r = redis.Redis.from_url(admin_env.redis_url)
    r.delete(QUEUE, LABELS)
    q = ModerationQueue(r)
    entries = [q.enqueue(9_000 + i, "text", 0.2, [{"kind": "text", "label": "diversion:phone"}]) for i in range(6)]

    with TestClient(_app()) as c:  # first life of the service
        claimed = c.post("/v1/admin/moderation/claim", json={"moderator": "alice", "count": 3}, headers=H).json()
        assert [i["entry_id"] for i in claimed["items"]] == entries[:3]
        assert c.post(f"/v1/admin/moderation/{entries[0]}/approve", json={"moderator": "alice"},
                      headers=H).status_code == 200
        rej = c.post(f"/v1/admin/moderation/{entries[1]}/reject", json={"moderator": "alice", "reason": "phone number"},
                     headers=H)
        assert rej.status_code == 200 and rej.json()["lake"] is True

    with TestClient(_app()) as c:  # the service restarted: the queue is as it was
        body = c.get("/v1/admin/moderation/queue", headers=H).json()
        status = {i["entry_id"]: (i["status"], i["claimed_by"]) for i in body["items"]}
        assert status == {entries[2]: ("claimed", "alice"), **{e: ("open", None) for e in entries[3:]}}
        bob = c.post("/v1/admin/moderation/claim", json={"moderator": "bob", "count": 10}, headers=H).json()
        assert [i["entry_id"] for i in bob["items"]] == entries[3:]  # alice's live claim is not taken
        alice = c.post("/v1/admin/moderation/claim", json={"moderator": "alice", "count": 5}, headers=H).json()
        assert [i["entry_id"] for i in alice["items"]] == [entries[2]]
        for e in entries[2:]:
            who = "alice" if e == entries[2] else "bob"
            assert c.post(f"/v1/admin/moderation/{e}/approve", json={"moderator": who}, headers=H).status_code == 200
        again = c.post(f"/v1/admin/moderation/{entries[0]}/approve", json={"moderator": "bob"}, headers=H)
        assert again.status_code == 409
        assert c.get("/v1/admin/moderation/queue", headers=H).json()["items"] == []

    labels = [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(LABELS)]
    assert sorted(lab["entry_id"] for lab in labels) == sorted(entries)  # each exactly once
    assert sorted(int(lab["listing_id"]) for lab in labels) == list(range(9_000, 9_006))
    table = read_labels(tmp_path / "lake")
    assert len(table) == 6 and table["entry_id"].is_unique
    assert table.loc[table["entry_id"] == entries[1], "reason"].item() == "phone number"
    assert int(table["approved"].sum()) == 5
    assert r.hget(label_key(9001), "decision") == b"reject"


def test_concurrent_decisions_only_one_wins(redis_client):
    q = ModerationQueue(redis_client)
    entry = q.enqueue(42, "image", 0.1, [])
    results: list[str] = []

    def decide(who: str, decision: str) -> None:
        try:
            q.decide(entry, decision, who, "nsfw" if decision == "reject" else "")
            results.append(f"ok:{who}")
        except DecisionConflict:
            results.append(f"conflict:{who}")

    threads = [threading.Thread(target=decide, args=(f"m{i}", "approve" if i % 2 else "reject")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(x.startswith("ok:") for x in results) == 1
    assert redis_client.xlen(LABELS) == 1 and q.depth() == 0


def test_abandoned_claim_is_taken_over(redis_client):
    q = ModerationQueue(redis_client, claim_timeout_ms=0)
    e = q.enqueue(7, "text", 0.3, [])
    assert [i.entry_id for i in q.claim("carol")] == [e]
    taken = q.claim("dave")  # carol's claim idles past the (zero) timeout
    assert [(i.entry_id, i.listing_id) for i in taken] == [(e, "7")]
    assert q.items()[0].claimed_by == "dave"


def test_admin_auth_and_reason_required(admin_env):
    with TestClient(_app()) as c:
        assert c.get("/v1/admin/moderation/queue").status_code == 403
        assert c.get("/v1/admin/moderation/queue", headers={"X-Admin-Token": "wrong"}).status_code == 403
        q = ModerationQueue(c.app.state.services.state.redis)
        e = q.enqueue(5, "text", 0.2, [])
        bad = c.post(f"/v1/admin/moderation/{e}/reject", json={"moderator": "alice", "reason": " "}, headers=H)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "reason"
        assert c.post("/v1/admin/moderation/nope/approve", json={"moderator": "a"}, headers=H).status_code in (409, 422)
        assert c.get("/admin").status_code == 200 and "Moderation queue" in c.get("/admin").text
