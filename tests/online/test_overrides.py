"""Admin global overrides through the API: applied from the next request; a wrong token is a 403."""

from __future__ import annotations

import pytest

from gpu_core.schema import CATEGORIES

TOKEN = "test-admin-token-1234"


@pytest.fixture()
def admin_client(served_world, monkeypatch):
    from fastapi.testclient import TestClient

    from gpu_core.settings import reset_settings
    from online.app import create_app

    monkeypatch.setenv("JAIKOD_ADMIN_TOKEN", TOKEN)
    reset_settings()
    with TestClient(create_app(refresher=False, services=False)) as client:
        yield client


def _categories(state, items) -> list[int]:
    m = state.mirror
    idx = m.index_of([it["product_id"] for it in items])
    return [int(c) for c in m.cols["category"][idx]]


def _admin(client, token=TOKEN, **body):
    return client.post("/v1/admin/overrides", json=body, headers={"X-Admin-Token": token})


def test_ban_category_applies_from_next_request(admin_client, users):
    state = admin_client.app.state.services.state
    before = admin_client.post("/v1/feed", json={"user_id": users[0], "limit": 50}).json()["items"]
    cats = _categories(state, before)
    top = max(set(cats), key=cats.count)
    r = _admin(admin_client, action="ban_category", category=CATEGORIES[top])
    assert r.status_code == 200 and r.json()["ok"]
    for u in users[:3]:
        items = admin_client.post("/v1/feed", json={"user_id": u, "limit": 50}).json()["items"]
        assert items and top not in _categories(state, items)
    got = admin_client.get("/v1/admin/overrides", headers={"X-Admin-Token": TOKEN}).json()
    assert got["banned_categories"] == [CATEGORIES[top]]
    _admin(admin_client, action="unban_category", category=CATEGORIES[top])
    after = admin_client.post("/v1/feed", json={"user_id": users[0], "limit": 50}).json()["items"]
    assert top in _categories(state, after)


def test_force_boost_raises_a_listing(admin_client, users):
    body = admin_client.post("/v1/feed", json={"user_id": users[1], "limit": 50}).json()
    organic = [it for it in body["items"] if not it["sponsored"]]
    low = organic[-1]
    r = _admin(admin_client, action="boost", product_id=low["product_id"])
    assert r.status_code == 200
    again = admin_client.post("/v1/feed", json={"user_id": users[1], "limit": 50}).json()["items"]
    pos = {it["product_id"]: it for it in again}
    assert low["product_id"] in pos
    assert pos[low["product_id"]]["position"] < low["position"]
    assert pos[low["product_id"]]["score"] > low["score"]


@pytest.mark.parametrize("headers", [{"X-Admin-Token": "wrong"}, {}])
def test_wrong_or_missing_token_is_403(admin_client, headers):
    r = admin_client.post("/v1/admin/overrides", json={"action": "boost", "product_id": 1}, headers=headers)
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["field"] == "X-Admin-Token" and "token" in err["message"]
    assert admin_client.get("/v1/admin/overrides", headers=headers).status_code == 403


def test_bad_override_is_422_naming_the_field(admin_client):
    r = _admin(admin_client, action="ban_category", category="not-a-category")
    assert r.status_code == 422 and r.json()["error"]["field"] == "category"
    r = _admin(admin_client, action="boost")
    assert r.status_code == 422 and r.json()["error"]["field"] == "product_id"
