"""The HTTP contract: ranking, cold starts, bounds, and bad input answered with a 4xx naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from .conftest import AUTH

TS = 1_767_225_769


def rec(client: TestClient, **body: object) -> dict:
    context = {"device": "ios", "timestamp": TS}
    r = client.post("/v1/recommendations", json={"user_id": "u1", "context": context, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_ranks_candidates_best_first_with_probabilities(client: TestClient) -> None:
    body = rec(client, candidates=["v1", "v2", "v3", "v4"], k=3)
    scores = [i["score"] for i in body["items"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)
    assert {i["item_id"] for i in body["items"]} <= {"v1", "v2", "v3", "v4"}
    assert body["model_version"] and body["took_ms"] > 0


def test_without_candidates_the_models_popular_items_are_ranked(client: TestClient) -> None:
    body = rec(client, k=20)
    assert len(body["items"]) == 20


def test_k_larger_than_the_candidates_returns_them_all(client: TestClient) -> None:
    assert len(rec(client, candidates=["v1", "v2"], k=10)["items"]) == 2


def test_unknown_users_and_items_are_cold_starts_not_errors(client: TestClient) -> None:
    r = client.post("/v1/recommendations", json={"user_id": "never-seen", "candidates": ["no-such-item", "v1"], "k": 2})
    assert r.status_code == 200
    assert {i["item_id"] for i in r.json()["items"]} == {"no-such-item", "v1"}


def test_same_request_gives_the_same_ranking(client: TestClient) -> None:
    assert rec(client, candidates=["v5", "v6", "v7"])["items"] == rec(client, candidates=["v5", "v6", "v7"])["items"]


def test_score_matches_recommendation_scores(client: TestClient) -> None:
    ranked = rec(client, candidates=["v1", "v2"], k=2)["items"]
    rows = [{"user_id": "u1", "item_id": i["item_id"], "context": {"device": "ios", "timestamp": TS}} for i in ranked]
    r = client.post("/v1/score", json={"rows": rows})
    assert r.status_code == 200
    assert r.json()["scores"] == pytest.approx([i["score"] for i in ranked], abs=1e-7)


def test_explain_returns_the_raw_values_the_row_was_scored_with(client: TestClient) -> None:
    r = client.post("/v1/score", headers=AUTH, json={"explain": True, "rows": [
        {"user_id": "u1", "item_id": "v1", "context": {"device": "ios", "timestamp": TS}},
        {"user_id": "ghost", "item_id": "ghost-item"}]})
    f = r.json()["features"]
    assert f["device"] == ["ios", ""] and f["country"][1] == ""  # the cold row: empty attributes
    assert f["user_history__count"][0] > 0 and f["user_history__count"][1] == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"user_id": "u1", "k": 0}, "k"),
    ({"user_id": "u1", "k": 21}, "k"),
    ({"user_id": "u1", "k": "many"}, "k"),
    ({"user_id": "u1", "candidates": []}, "candidates"),
    ({"user_id": "u1", "candidates": [f"v{i}" for i in range(51)]}, "candidates"),
    ({"user_id": "u1", "candidates": "v1"}, "candidates"),
    ({"user_id": "u1", "candidates": [""]}, "candidates.0"),
    ({"user_id": "u1", "context": {"devcie": "ios"}}, "context.devcie"),
    ({"user_id": "u1", "context": {"device": {"a": 1}}}, "context.device"),
    ({"user_id": "u1", "context": {"timestamp": "yesterday"}}, "context.timestamp"),
    ({"user_id": "u1", "context": {"timestamp": -5}}, "context.timestamp"),
    ({"user_id": None}, "user_id"),
    ({"candidates": ["v1"]}, "user_id"),
    ({"user_id": "u1", "extra": 1}, "extra"),
])
def test_bad_recommendation_requests_are_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert err["fields"][0]["field"] == field
    assert f"'{field}'" in err["message"]


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b"", b"null"])
def test_malformed_bodies_are_422(client: TestClient, payload: bytes) -> None:
    r = client.post("/v1/recommendations", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


def test_oversized_body_is_413_before_parsing(client: TestClient) -> None:
    r = client.post("/v1/recommendations", content=b" " * (65 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "RECSYS_MAX_BODY_BYTES" in r.json()["error"]["message"]


def test_bad_score_rows_name_the_row(client: TestClient) -> None:
    rows = [{"user_id": "u1", "item_id": "v1"}, {"user_id": "u1", "item_id": "v2", "context": {"colour": "red"}}]
    r = client.post("/v1/score", json={"rows": rows})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "rows.1.context.colour"
    r = client.post("/v1/score", json={"rows": [{"user_id": "u1"}]})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "rows.0.item_id"


def test_wrong_method_and_path_are_4xx(client: TestClient) -> None:
    assert client.get("/v1/recommendations").status_code == 405
    assert client.post("/v1/nothing", json={}).status_code == 404


def test_events_need_the_admin_token(client: TestClient) -> None:
    body = {"events": [{"event_id": "e1", "user_id": "u1", "item_id": "v1", "label": 1}]}
    assert client.post("/v1/events", json=body).status_code == 401
    assert client.post("/v1/events", json=body, headers={"authorization": "Bearer nope"}).status_code == 401


@pytest.mark.parametrize(("event", "field"), [
    ({"event_id": "e", "user_id": "u1", "item_id": "v1", "label": 2}, "events.0.label"),
    ({"event_id": "e", "user_id": "u1", "item_id": "v1", "label": True}, "events.0.label"),
    ({"user_id": "u1", "item_id": "v1", "label": 1}, "events.0.event_id"),
    ({"event_id": "two words", "user_id": "u1", "item_id": "v1", "label": 1}, "events.0.event_id"),
    ({"event_id": "e" * 257, "user_id": "u1", "item_id": "v1", "label": 1}, "events.0.event_id"),
])
def test_bad_events_are_422(client: TestClient, event: dict, field: str) -> None:
    r = client.post("/v1/events", json={"events": [event]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == field


def test_events_update_the_statistics_the_next_request_sees(client: TestClient) -> None:
    row = {"user_id": "fresh-user", "item_id": "v3", "context": {"device": "web", "timestamp": TS}}

    def counters() -> tuple[float, float]:
        f = client.post("/v1/score", json={"rows": [row], "explain": True}, headers=AUTH).json()["features"]
        return f["user_history__count"][0], f["user_history__pos"][0]

    assert counters() == (0.0, 0.0)
    r = client.post("/v1/events", headers=AUTH, json={"events": [{**row, "label": 1, "event_id": "fresh-1"},
                                                         {**row, "label": 0, "event_id": "fresh-2"}]})
    assert r.status_code == 200 and r.json()["events"] == 2
    assert counters() == (2.0, 1.0)


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["store"] == "embedded"
    assert ready.json()["degraded"] is None and rec(client, candidates=["v1"])["degraded"] is None
    text = client.get("/metrics").text
    for name in ("recsys_http_request_duration_seconds_bucket{", 'recsys_stage_duration_seconds_count{stage="fetch"}',
                 'stage="transform"', 'stage="score"', "recsys_candidates_per_request_count",
                 "recsys_store_errors_total", "recsys_model_info{",
                 'recsys_degraded_responses_total{reason="store_unavailable"} 0.0'):
        assert name in text
    assert 'route="/v1/recommendations"' in text
