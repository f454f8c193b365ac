"""Requests without candidates rank the store's most popular items: materialized from the log, kept
current by POST /v1/events, re-read by every worker on a timer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import items_by_positives

from .conftest import AUTH, TOKEN

N = 5


@pytest.fixture(scope="module")
def popular_client(tiny_artifact: Path, tiny_raw: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw, admin_token=TOKEN, popular_candidates=N,
                               popular_refresh_s=0.1)
    with TestClient(create_app(settings)) as c:
        yield c


def _default_candidates(client: TestClient) -> set[str]:
    r = client.post("/v1/recommendations", json={"user_id": "u1", "context": {"device": "ios"}, "k": N})
    assert r.status_code == 200, r.text
    return {i["item_id"] for i in r.json()["items"]}


def test_default_candidates_are_the_items_with_the_most_positive_events(popular_client: TestClient,
                                                                         tiny_raw: Path) -> None:
    ready = popular_client.get("/readyz").json()
    assert ready["default_candidates"] == {"items": N, "from": "store"}
    assert _default_candidates(popular_client) == set(items_by_positives(tiny_raw)[:N])


def test_events_bring_a_known_item_into_the_default_candidates(popular_client: TestClient, tiny_raw: Path) -> None:
    risen = items_by_positives(tiny_raw)[-1]  # in the store (materialized), but the least popular
    assert risen not in _default_candidates(popular_client)
    most = int(pd.read_parquet(tiny_raw / "impressions.parquet").groupby("item_id")["label"].sum().max())
    events = [{"event_id": f"rise-{i}", "user_id": f"u{i}", "item_id": risen, "label": 1} for i in range(most + 1)]
    r = popular_client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert r.status_code == 200 and r.json()["applied"] == most + 1
    deadline = time.monotonic() + 10
    while risen not in _default_candidates(popular_client):  # the next refresh, 0.1 s away
        assert time.monotonic() < deadline, "the refresher never picked up the events"
        time.sleep(0.05)


def test_events_for_unknown_items_create_nothing_and_never_become_candidates(popular_client: TestClient,
                                                                            tiny_raw: Path) -> None:
    """Issue 10 item 8: an item id that neither the served model nor the store knows (a typo, a
    made-up id) is reported as unknown, creates no key and never enters the popularity ranking."""
    most = int(pd.read_parquet(tiny_raw / "impressions.parquet").groupby("item_id")["label"].sum().max())
    events = [{"event_id": f"made-up-{i}", "user_id": f"u{i}", "item_id": "made-up-item", "label": 1}
              for i in range(most + 1)]
    r = popular_client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert r.status_code == 200
    assert (r.json()["applied"], r.json()["unknown"], r.json()["counters_updated"]) == (0, most + 1, 0)
    time.sleep(0.3)  # three refreshes
    assert "made-up-item" not in _default_candidates(popular_client)
    store = popular_client.app.state.service.store  # type: ignore[attr-defined]
    assert not [k for k in store._data if "made-up" in k] and "made-up-item" not in str(store._rankings)
