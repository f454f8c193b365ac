"""Online, a request's timestamp goes through the offline loader's parser: the same instant as unix
seconds (int or float) or ISO-8601 ('Z', an offset, or none = UTC) scores identically; anything else
is a 422 naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from .conftest import AUTH

T = 1_767_225_600  # 2026-01-01T00:00:00Z, a Thursday: hour and weekday features both change with it


def _scores(client: TestClient, timestamp: object) -> list[float]:
    rows = [{"user_id": "u1", "item_id": i, "context": {"device": "ios", "timestamp": timestamp}}
            for i in ("v1", "v2", "v3")]
    r = client.post("/v1/score", json={"rows": rows})
    assert r.status_code == 200, r.text
    return r.json()["scores"]


@pytest.mark.parametrize("same", [T + 0.9, "2026-01-01T00:00:00Z", "2026-01-01T05:30:00+05:30",
                                  "2025-12-31T19:00:00-05:00", "2026-01-01 00:00:00", "2026-01-01T00:00:00.5"])
def test_the_same_instant_scores_identically_in_every_representation(client: TestClient, same: object) -> None:
    assert _scores(client, same) == _scores(client, T)
    assert _scores(client, T + 7 * 3600) != _scores(client, T)  # the hour feature does see the time


def test_explained_rows_carry_the_parsed_unix_seconds(client: TestClient) -> None:
    r = client.post("/v1/score", headers=AUTH, json={"explain": True, "rows": [
        {"user_id": "u1", "item_id": "v1", "context": {"device": "ios", "timestamp": "2026-01-01T01:00:00+01:00"}}]})
    assert r.status_code == 200, r.text
    assert r.json()["features"]["timestamp"] == [T]


def test_context_time_columns_are_typed_by_the_same_parser() -> None:
    import numpy as np

    from recsys.online.columns import typed

    got = typed("time", np.array(["2026-01-01T05:30:00+05:30", T, T + 0.5, None, "2026-01-01"], dtype=object))
    assert got[[0, 1, 2, 4]].tolist() == [T] * 4 and np.isnan(got[3])


@pytest.mark.parametrize("bad", ["yesterday", "01/02/2026", str(T), "0350-05-21T14:30:23Z", "7613-01-05T00:00:00Z"])
def test_a_timestamp_that_is_not_a_time_is_a_422_naming_it(client: TestClient, bad: str) -> None:
    r = client.post("/v1/recommendations", json={"user_id": "u1", "context": {"timestamp": bad}})
    assert r.status_code == 422 and "context.timestamp" in r.text, r.text
