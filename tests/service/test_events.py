"""POST /v1/events and /v1/labels (issue 10 items 3 and 8, issue 11 item 4): idempotent events, unknown
items, late labels joined to their impressions, and admission control under overload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings

from .conftest import AUTH, TOKEN

TS = 1_767_225_769


@pytest.fixture
def client(tiny_artifact: Path, tiny_raw: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw, admin_token=TOKEN, popular_refresh_s=0)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def item(tiny_raw: Path) -> str:
    """A known item (in the model's vocabulary and the store)."""
    return str(pd.read_parquet(tiny_raw / "impressions.parquet")["item_id"].value_counts().index[0])


def _row(item: str, user: str = "fresh-user") -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "context": {"device": "web", "timestamp": TS}}


def _counters(client: TestClient, item: str, user: str = "fresh-user") -> dict[str, float]:
    r = client.post("/v1/score", json={"rows": [_row(item, user)], "explain": True}, headers=AUTH)
    f = r.json()["features"]
    return {c: f[c][0] for c in ("user_history__count", "user_history__pos", "item_history__count",
                                 "item_history__pos")}


def _popularity(client: TestClient, item: str) -> float | None:
    store = client.app.state.service.store  # type: ignore[attr-defined]
    return store._rankings[client.app.state.service.ranker.keys.popular].get(item)  # type: ignore[attr-defined]


def _post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_batch_posted_twice_counts_once(client: TestClient, item: str) -> None:
    """Issue 10 item 8: the same batch posted twice doubled the counters and the popularity score."""
    before, popular = _counters(client, item), _popularity(client, item)
    batch = {"events": [{**_row(item), "event_id": "dup-1", "label": 1},
                        {**_row(item), "event_id": "dup-2", "label": 0}]}
    first = _post(client, "/v1/events", batch)
    assert (first["applied"], first["duplicates"], first["unknown"]) == (2, 0, 0)
    once, popular_once = _counters(client, item), _popularity(client, item)
    again = _post(client, "/v1/events", batch)
    assert (again["applied"], again["duplicates"], again["unknown"], again["counters_updated"]) == (0, 2, 0, 0)
    assert _counters(client, item) == once and _popularity(client, item) == popular_once == (popular or 0) + 1
    assert once["user_history__count"] == before["user_history__count"] + 2
    assert once["item_history__pos"] == before["item_history__pos"] + 1
    # a repeated id inside one batch is a duplicate too; a new id is applied
    mixed = _post(client, "/v1/events", {"events": [{**_row(item), "event_id": "dup-3", "label": 1},
                                                    {**_row(item), "event_id": "dup-3", "label": 1},
                                                    {**_row(item), "event_id": "dup-1", "label": 1}]})
    assert (mixed["applied"], mixed["duplicates"]) == (1, 2)
    assert _counters(client, item)["user_history__count"] == once["user_history__count"] + 1
    metrics = client.get("/metrics").text
    assert 'recsys_events_total{kind="impression",outcome="duplicate"} 4.0' in metrics


def test_unknown_items_are_reported_and_create_no_keys(client: TestClient, item: str) -> None:
    before = _counters(client, item, "u-unknown")
    r = _post(client, "/v1/events", {"events": [{**_row("no-such-item", "u-unknown"), "event_id": "x-1", "label": 1},
                                                {**_row(item, "u-unknown"), "event_id": "x-2", "label": 1}]})
    assert (r["applied"], r["unknown"]) == (1, 1)
    after = _counters(client, item, "u-unknown")
    assert after["user_history__count"] == before["user_history__count"] + 1  # the known item's event only
    state = client.app.state.service  # type: ignore[attr-defined]
    assert not [k for k in state.store._data if "no-such-item" in k] and _popularity(client, "no-such-item") is None
    # the unknown event's id was not claimed: once the item exists (materialized), its retry is applied
    assert state.ranker.keys.events(["x-1"])[0] not in state.store._claims


def test_an_item_outside_the_vocabulary_is_known_by_its_store_record(client: TestClient) -> None:
    state = client.app.state.service  # type: ignore[attr-defined]
    vocab = state.ranker.events.items
    prefix = state.ranker.keys.item("")[:-1]
    stored = [k[len(prefix):-1] for k in state.store._data if k.startswith(prefix)]
    rare = next(i for i in stored if vocab.encode(pd.Series([i]).to_numpy(dtype=object))[0] == 0)
    r = _post(client, "/v1/events", {"events": [{**_row(rare), "event_id": "rare-1", "label": 0}]})
    assert r["applied"] == 1 and r["unknown"] == 0


def test_a_late_label_is_joined_to_its_impression(client: TestClient, item: str) -> None:
    """Issue 11 item 4: the impression is counted when served (no label); its label arrives later by
    impression id and adds the positive; a second label, or one for an unknown id, changes nothing."""
    before = _counters(client, item, "late-user")
    imp = _post(client, "/v1/events", {"events": [{**_row(item, "late-user"), "event_id": "imp-1"},
                                                  {**_row(item, "late-user"), "event_id": "imp-2"}]})
    assert imp["applied"] == 2
    served = _counters(client, item, "late-user")
    assert served["user_history__count"] == before["user_history__count"] + 2
    assert served["user_history__pos"] == before["user_history__pos"]  # labels pending
    labels = _post(client, "/v1/labels", {"labels": [{"impression_id": "imp-1", "label": 1, "timestamp": TS + 600},
                                                     {"impression_id": "imp-2", "label": 0},
                                                     {"impression_id": "never-posted", "label": 1}]})
    assert (labels["applied"], labels["duplicates"], labels["unknown"]) == (2, 0, 1)
    joined = _counters(client, item, "late-user")
    assert joined == {**served, "user_history__pos": served["user_history__pos"] + 1,
                      "item_history__pos": served["item_history__pos"] + 1}
    again = _post(client, "/v1/labels", {"labels": [{"impression_id": "imp-1", "label": 1},
                                                    {"impression_id": "imp-2", "label": 1}]})
    assert (again["applied"], again["duplicates"]) == (0, 2) and _counters(client, item, "late-user") == joined
    # an impression posted with its label expects none later
    _post(client, "/v1/events", {"events": [{**_row(item, "late-user"), "event_id": "imp-3", "label": 1}]})
    assert _post(client, "/v1/labels", {"labels": [{"impression_id": "imp-3", "label": 1}]})["unknown"] == 1


def test_labels_are_validated_and_need_the_token(client: TestClient) -> None:
    r = client.post("/v1/labels", json={"labels": [{"impression_id": "a", "label": 1}]})
    assert r.status_code == 401
    r = client.post("/v1/labels", json={"labels": [{"impression_id": "a", "label": 2}]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "labels.0.label"
    r = client.post("/v1/labels", json={"labels": [{"label": 1}]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "labels.0.impression_id"


def test_overload_is_answered_429_before_the_body_is_read(tiny_artifact: Path, tiny_raw: Path, item: str) -> None:
    """Issue 10 item 3: event posts beyond RECSYS_EVENTS_MAX_INFLIGHT are refused at once with
    Retry-After (nothing read, nothing counted), while ranking and anonymous posts are not queued;
    after its pause (the events' share of the worker's time) the refused post's retry is applied."""
    settings = ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw, admin_token=TOKEN, popular_refresh_s=0,
                               events_max_inflight=2, events_loop_share=0.05)
    app = create_app(settings)

    def body(i: int) -> dict[str, Any]:
        return {"events": [{**_row(item, "busy-user"), "event_id": f"busy-{i}", "label": 1}]}

    async def scenario() -> None:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            posts = [client.post("/v1/events", json=body(i), headers=AUTH) for i in range(6)]
            others = [client.post("/v1/events", json=body(9)),  # anonymous: 401 at once, not queued
                      client.post("/v1/recommendations", json={"user_id": "busy-user", "candidates": [item]})]
            t0 = time.perf_counter()
            answers = await asyncio.gather(*posts, *others)
            took = time.perf_counter() - t0
            statuses = [r.status_code for r in answers]
            assert sorted(statuses[:6]) == [200, 200, 429, 429, 429, 429] and statuses[6:] == [401, 200]
            refused = next(r for r in answers if r.status_code == 429)
            assert int(refused.headers["retry-after"]) >= 19 and "RECSYS_EVENTS_MAX_INFLIGHT" in refused.text
            assert took > 0.01  # the second admitted post waited for the first one's pause
            for i, r in enumerate(answers[:6]):  # the clients retry what was refused: nothing is lost
                while r.status_code == 429:
                    await asyncio.sleep(0.05)
                    r = await client.post("/v1/events", json=body(i), headers=AUTH)
                assert r.status_code == 200 and r.json()["applied"] == 1
            metrics = (await client.get("/metrics")).text
            assert "recsys_events_refused_total 4.0" in metrics
            assert 'recsys_events_total{kind="impression",outcome="applied"} 6.0' in metrics

    asyncio.run(scenario())


def test_a_failed_write_releases_the_claims_so_the_retry_is_applied(client: TestClient, item: str) -> None:
    """Events are never dropped silently: when the counters cannot be written (here: a counter field
    that something else overwrote with text), the answer is 503 and the event ids are not kept as
    applied, so the client's retry is applied instead of being reported as a duplicate."""
    state = client.app.state.service  # type: ignore[attr-defined]
    key = state.ranker.keys.user("broken-user")
    state.store._data[key] = {"a": {}, "c": {"user_history:c": "not a number"}}
    body = {"events": [{**_row(item, "broken-user"), "event_id": "fail-1", "label": 1}]}
    failed = client.post("/v1/events", json=body, headers=AUTH)
    assert failed.status_code == 503 and "non-integer" in failed.json()["error"]["message"]
    assert not [k for k in state.store._data if k.endswith(":e:fail-1")]
    state.store._data[key] = {"a": {}, "c": {}}
    retried = _post(client, "/v1/events", body)
    assert (retried["applied"], retried["duplicates"]) == (1, 0)
