"""Credentials and disclosure: no empty credential ever opens a route, and anonymous callers see no
stored user data (nor which ids exist)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recsys.errors import RecsysError
from service.app import create_app

from .conftest import AUTH

EXPLAIN_ROWS = [{"user_id": "u1", "item_id": "v1", "context": {"device": "ios"}}]


@pytest.mark.parametrize("token", ["", "   ", "short-token", "fifteen-chars!!"])
def test_an_empty_or_short_admin_token_refuses_to_start_and_says_the_minimum(
        token: str, tiny_artifact: Path, tiny_raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", token)
    monkeypatch.setenv("RECSYS_MODEL_DIR", str(tiny_artifact))
    monkeypatch.setenv("RECSYS_RAW_DIR", str(tiny_raw))
    with pytest.raises(RecsysError, match="RECSYS_ADMIN_TOKEN: must be at least 16 characters"):
        create_app()


def test_a_token_with_whitespace_refuses_to_start(tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "sixteen chars or more")
    monkeypatch.setenv("RECSYS_MODEL_DIR", str(tiny_artifact))
    with pytest.raises(RecsysError, match="RECSYS_ADMIN_TOKEN: must not contain whitespace"):
        create_app()


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer    ", "bearer", "Basic c2VydmljZS10ZXN0LXRva2Vu"])
def test_an_empty_or_foreign_credential_never_opens_the_admin_routes(client: TestClient, header: str) -> None:
    events = {"events": [{"event_id": "e1", "user_id": "u1", "item_id": "v1", "label": 1}]}
    assert client.post("/v1/events", json=events, headers={"authorization": header}).status_code == 401
    assert client.post("/admin/reload", headers={"authorization": header}).status_code == 401
    r = client.post("/v1/score", json={"rows": EXPLAIN_ROWS, "explain": True}, headers={"authorization": header})
    assert r.status_code == 401


def test_explain_shows_stored_user_data_to_the_admin_token_only(client: TestClient) -> None:
    anonymous = client.post("/v1/score", json={"rows": EXPLAIN_ROWS, "explain": True})
    assert anonymous.status_code == 401 and "features" not in anonymous.json()
    assert "RECSYS_ADMIN_TOKEN" in anonymous.json()["error"]["message"]
    admin = client.post("/v1/score", json={"rows": EXPLAIN_ROWS, "explain": True}, headers=AUTH)
    assert admin.status_code == 200 and admin.json()["features"]["country"][0] != ""


def test_known_and_unknown_users_answer_alike_to_anonymous_callers(client: TestClient) -> None:
    """Same status and the same fields for a stored user and an id nobody has: no attribute, no
    counter, no empty-string marker of a missing record."""
    bodies = []
    for user in ("u1", "no-such-user-anywhere"):
        rows = [{"user_id": user, "item_id": "v1", "context": {"device": "ios"}}]
        scored = client.post("/v1/score", json={"rows": rows})
        ranked = client.post("/v1/recommendations", json={"user_id": user, "candidates": ["v1", "v2"]})
        assert scored.status_code == ranked.status_code == 200
        assert set(scored.json()) == {"scores", "model_version", "took_ms", "degraded", "features"}
        assert scored.json()["features"] is None
        bodies.append((set(scored.json()), set(ranked.json())))
        explained = client.post("/v1/score", json={"rows": rows, "explain": True})
        assert explained.status_code == 401
        bodies.append(explained.json())
    assert bodies[0] == bodies[2] and bodies[1] == bodies[3]


def test_readiness_shows_internals_to_the_admin_token_only(client: TestClient, tiny_artifact: Path) -> None:
    anonymous = client.get("/readyz")
    assert anonymous.status_code == 200 and anonymous.json()["details"] is None
    assert str(tiny_artifact) not in anonymous.text
    admin = client.get("/readyz", headers=AUTH).json()["details"]
    assert admin["model_dir"] == str(tiny_artifact) and admin["store"] == "embedded" and admin["materialized"]
