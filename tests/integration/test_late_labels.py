"""A late label (POST /v1/labels) counts in the time bucket of its impression, not of its arrival:
windowed statistics see it exactly where the offline definition puts it (issue 11 item 4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings

from .conftest import TOKEN

AUTH = {"authorization": f"Bearer {TOKEN}"}
TS = 1_767_225_769


def test_a_late_label_lands_in_the_bucket_of_its_impression(tiny_raw: Path, windowed_artifact: Path) -> None:
    item = str(pd.read_parquet(tiny_raw / "impressions.parquet")["item_id"].value_counts().index[0])
    settings = ServiceSettings(model_dir=windowed_artifact, raw_dir=tiny_raw, admin_token=TOKEN, popular_refresh_s=0)
    with TestClient(create_app(settings)) as client:
        shown = TS - 3 * 86_400  # in user_last_day's window 60 s later; outside it at TS

        def last_day(ts: int) -> tuple[float, float]:
            row = {"user_id": "w-user", "item_id": item, "context": {"device": "web", "timestamp": ts}}
            f = client.post("/v1/score", json={"rows": [row], "explain": True}, headers=AUTH).json()["features"]
            return f["user_last_day__count"][0], f["user_last_day__pos"][0]

        event = {"event_id": "w-1", "user_id": "w-user", "item_id": item,
                 "context": {"device": "web", "timestamp": shown}}
        assert client.post("/v1/events", json={"events": [event]}, headers=AUTH).json()["applied"] == 1
        assert last_day(shown + 60) == (1.0, 0.0)
        r = client.post("/v1/labels", json={"labels": [{"impression_id": "w-1", "label": 1, "timestamp": TS}]},
                        headers=AUTH)
        assert r.status_code == 200 and r.json()["applied"] == 1
        assert last_day(shown + 60) == (1.0, 1.0) and last_day(TS) == (0.0, 0.0)
