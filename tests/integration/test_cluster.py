"""The store at scale, on real servers: bounded records under a week of events, and a Redis Cluster
failover (a master killed, its replica promoted) that the service rides out in degraded mode."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from recsys.artifact import load_artifact
from recsys.store.keys import KeySpace
from recsys.store.redis import RedisStore
from service.app import create_app
from service.settings import ServiceSettings
from tests.cluster import RedisCluster

from .conftest import TOKEN
from .redis_proc import fill

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
AUTH = {"authorization": f"Bearer {TOKEN}"}
DAY = 86_400


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_week_of_events_keeps_the_record_size_and_the_read_time_flat(
        redis_url: str, tiny_raw: Path, windowed_artifact: Path) -> None:
    """One user, an event every 10 simulated minutes for 7 days, against windowed statistics (1 day
    in 24 buckets, 7 days, 2 days): expired buckets are dropped as new ones are written, so after the
    longest window has filled the record stops growing, and reading it costs the same."""
    prefix = f"bounded{time.time_ns()}"
    await fill(redis_url, windowed_artifact, tiny_raw, prefix=prefix)
    keys = KeySpace(prefix, load_artifact(windowed_artifact).feature_version)
    app = create_app(ServiceSettings(model_dir=windowed_artifact, redis_url=redis_url, admin_token=TOKEN,
                                     key_prefix=prefix, store_budget_ms=5000))
    store = RedisStore(redis_url)
    user, items = "u-bounded", ["v1", "v2", "v3"]
    start = 1_767_225_600
    sizes: dict[int, int] = {}
    reads: dict[int, float] = {}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        for hour in range(7 * 24 + 1):
            ts = start + hour * 3600
            events = [{"event_id": f"w{hour}-{i}", "user_id": user, "item_id": items[(hour + i) % 3], "label": i % 2,
                       "context": {"timestamp": ts + 600 * i, "device": "ios"}} for i in range(6)]
            resp = await client.post("/v1/events", json={"events": events}, headers=AUTH)
            assert resp.status_code == 200, resp.text
            if hour % 24 == 0 and hour >= 48:
                (record,) = await store.read([keys.user(user)])
                assert record is not None
                sizes[hour // 24] = len(json.dumps(record))
                t0 = time.perf_counter()
                for _ in range(200):
                    await store.read([keys.user(user), *keys.items(items)])
                reads[hour // 24] = (time.perf_counter() - t0) / 200
    await store.close()
    # full from day 7 of the 7-day window on; the 1- and 2-day windows were full long before
    assert max(sizes.values()) <= sizes[2] * 1.1 + 64, sizes
    assert reads[7] < reads[2] * 1.5 + 0.001, reads


async def test_events_and_late_labels_are_idempotent_on_a_cluster(
        redis_cluster: RedisCluster, tiny_artifact: Path, tiny_raw: Path) -> None:
    """Event ids, kept impressions and label claims are hash-tagged one by one, so one batch's keys
    lie in many slots on every master: the claims still answer per key, a repost is all duplicates,
    and a late label finds its impression wherever it lives."""
    prefix = f"cev{time.time_ns()}"
    redis_cluster_url = redis_cluster.url
    await fill(redis_cluster_url, tiny_artifact, tiny_raw, prefix=prefix)
    app = create_app(ServiceSettings(model_dir=tiny_artifact, redis_url=redis_cluster_url, admin_token=TOKEN,
                                     key_prefix=prefix, store_budget_ms=5000))
    ts = 1_767_225_769
    items = [f"v{i}" for i in range(1, 41)]
    events = [{"event_id": f"c-{i}", "user_id": "u-cluster", "item_id": item,
               "context": {"timestamp": ts, "device": "ios"}} for i, item in enumerate(items)]
    row = {"user_id": "u-cluster", "item_id": items[0], "context": {"timestamp": ts + 60, "device": "ios"}}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        async def post(path: str, body: dict[str, object]) -> dict[str, int]:
            resp = await client.post(path, json=body, headers=AUTH)
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

        async def user_history() -> tuple[float, float]:
            f = (await post("/v1/score", {"rows": [row], "explain": True}))["features"]
            return f["user_history__count"][0], f["user_history__pos"][0]  # type: ignore[index]

        assert (await post("/v1/events", {"events": events}))["applied"] == len(items)
        again = await post("/v1/events", {"events": events})
        assert (again["applied"], again["duplicates"]) == (0, len(items))
        assert await user_history() == (len(items), 0.0)  # labels pending
        labels = [{"impression_id": e["event_id"], "label": i % 2} for i, e in enumerate(events)]
        assert (await post("/v1/labels", {"labels": labels}))["applied"] == len(items)
        assert (await post("/v1/labels", {"labels": labels}))["duplicates"] == len(items)
        assert await user_history() == (len(items), len(items) // 2)
    keys = KeySpace(prefix, load_artifact(tiny_artifact).feature_version)
    port = redis_cluster.masters()[0]
    claims = keys.events(str(e["event_id"]) for e in events)
    slots = {redis_cluster.cli(port, "CLUSTER", "KEYSLOT", k).strip() for k in claims}
    assert len(slots) > len(items) // 2  # a slot per event id: one batch's claims span the cluster


async def test_the_service_rides_out_a_cluster_failover_in_degraded_mode(
        tiny_artifact: Path, tiny_raw: Path, tmp_path: Path) -> None:
    """Kill a master mid-traffic: every answer is a 200 within the store budget (cold features while
    the dead master's slots have no owner), and once its replica is promoted the answers come from
    the store's features again, without a restart."""
    cluster = RedisCluster(tmp_path / "cluster")
    budget_s = 0.1
    try:
        await fill(cluster.url, tiny_artifact, tiny_raw)
        app = create_app(ServiceSettings(model_dir=tiny_artifact, redis_url=cluster.url, admin_token=TOKEN,
                                         store_budget_ms=budget_s * 1000))
        items = [f"v{i}" for i in range(1, 60)]  # spread over every master's slots
        body = {"user_id": "u1", "candidates": items, "context": {"timestamp": 1_767_225_769}}
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            healthy = await client.post("/v1/recommendations", json=body)
            assert healthy.status_code == 200 and healthy.json()["degraded"] is None
            victim = cluster.masters()[0]
            cluster.kill(victim)
            killed_at = time.monotonic()
            outcomes: list[str | None] = []
            took: list[float] = []
            recovered_after = None
            while time.monotonic() - killed_at < 30:
                t0 = time.perf_counter()
                resp = await client.post("/v1/recommendations", json=body)
                took.append(time.perf_counter() - t0)
                assert resp.status_code == 200, resp.text
                outcomes.append(resp.json()["degraded"])
                if outcomes[-1] is None and victim not in cluster.masters():
                    recovered_after = time.monotonic() - killed_at
                    if outcomes[-5:] == [None] * 5:
                        break
                await asyncio.sleep(0.05)
            assert recovered_after is not None, f"still degraded 30 s after the kill: {outcomes[-5:]}"
            assert set(outcomes) <= {None, "store_unavailable"}
            # the store's share of an answer is bounded by the budget; the rest is the model's CPU
            assert float(np.percentile(took, 99)) < budget_s + 0.4, max(took)
            assert [i["item_id"] for i in (await client.post("/v1/recommendations", json=body)).json()["items"]] \
                == [i["item_id"] for i in healthy.json()["items"]]
    finally:
        cluster.stop()
