"""Requests without candidates are answered from the whole catalog: user tower → ANN ∪ popular →
seen filter → Wide&Deep. The live service on Redis gives the library's answer (ids, scores,
sources); a reload with a broken index is refused while the old model keeps serving."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from recsys.artifact import load_artifact
from recsys.online import Ranker
from recsys.online.retriever import OnlineRetriever, materialize_seen
from recsys.retrieval import Retriever
from recsys.store.materialize import materialize
from recsys.store.memory import MemoryStore
from recsys.store.redis import RedisStore
from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import reseal_artifact
from tests.integration.conftest import TOKEN, start_uvicorn

AUTH = {"authorization": f"Bearer {TOKEN}"}
USER, TS = "u3", 1_768_200_000  # after the whole log


def _body(**extra: Any) -> dict[str, Any]:
    return {"user_id": USER, "context": {"device": "ios", "timestamp": TS}, "k": 20, **extra}


def _seen(raw: Path, user: str) -> set[str]:
    imp = pd.read_parquet(raw / "impressions.parquet")
    return set(imp.loc[(imp["user_id"] == user) & (imp["label"] > 0), "item_id"])


async def _library_answer(world: dict[str, Any], exclude_seen: bool) -> tuple[Any, OnlineRetriever, MemoryStore]:
    artifact = load_artifact(world["model"])
    ranker, store = Ranker(artifact, "lib"), MemoryStore()
    await materialize(artifact.pipeline.spec, world["raw"], store, ranker.keys, log=lambda _: None)
    await materialize_seen(artifact.pipeline.spec, world["raw"], store, ranker.keys)
    await ranker.refresh_popular(store)
    retriever = Retriever.from_artifact(artifact)
    assert retriever is not None
    online = OnlineRetriever(ranker, retriever)
    got = await online.recommend(store, USER, None, TS, {"device": "ios"}, 20, exclude_seen)
    return got, online, store


@pytest.mark.redis
def test_live_uvicorn_on_redis_answers_like_the_library(taste_world: dict[str, Any], redis_url: str,
                                                        tmp_path: Path) -> None:
    artifact = load_artifact(taste_world["model"])
    spec = artifact.pipeline.spec

    async def fill() -> None:
        store = RedisStore(redis_url)
        keys = Ranker(artifact, "live").keys
        await materialize(spec, taste_world["raw"], store, keys, log=lambda _: None)
        await materialize_seen(spec, taste_world["raw"], store, keys)
        await store.close()

    asyncio.run(fill())
    proc, url = start_uvicorn({"RECSYS_MODEL_DIR": str(taste_world["model"]), "REDIS_URL": redis_url,
                               "RECSYS_KEY_PREFIX": "live", "RECSYS_ADMIN_TOKEN": TOKEN,
                               "RECSYS_STORE_BUDGET_MS": "10000"}, tmp_path / "uvicorn.log")
    try:
        served = httpx.post(f"{url}/v1/recommendations", json=_body(), timeout=30).json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    expected, _, _ = asyncio.run(_library_answer(taste_world, exclude_seen=True))
    assert [i["item_id"] for i in served["items"]] == expected.item_ids
    np.testing.assert_allclose([i["score"] for i in served["items"]], expected.scores, rtol=0, atol=1e-6)
    assert [i["source"] for i in served["items"]] == expected.sources
    assert "ann" in expected.sources
    assert not set(expected.item_ids) & _seen(taste_world["raw"], USER)


def test_seen_items_are_filtered_unless_the_request_keeps_them(taste_world: dict[str, Any]) -> None:
    seen = _seen(taste_world["raw"], USER)
    _, online, store = asyncio.run(_library_answer(taste_world, exclude_seen=True))
    kept, _, _ = asyncio.run(online.candidates(store, USER, TS, {"device": "ios"}, True, None))
    everything, _, _ = asyncio.run(online.candidates(store, USER, TS, {"device": "ios"}, False, None))
    assert seen and not set(kept) & seen
    assert seen <= set(everything)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_events_grow_the_seen_set_and_a_broken_index_reload_is_refused(taste_world: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(taste_world["model"], root / "current")
    shutil.copytree(taste_world["model"], root / "broken")
    (root / "broken" / "retrieval" / "index.faiss").write_bytes(b"\x00" * 64)
    reseal_artifact(root / "broken")
    app = create_app(ServiceSettings(model_dir=root / "current", raw_dir=taste_world["raw"], admin_token=TOKEN))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        before = (await client.post("/v1/recommendations", json=_body())).json()
        first = before["items"][0]["item_id"]
        r = await client.post("/v1/events", headers=AUTH, json={"events": [
            {"event_id": "seen-1", "user_id": USER, "item_id": first, "context": {"device": "ios", "timestamp": TS},
             "label": 1}]})
        assert r.status_code == 200, r.text
        after = (await client.post("/v1/recommendations", json=_body())).json()
        assert first not in [i["item_id"] for i in after["items"]]
        r = await client.post("/admin/reload", headers=AUTH, json={"model_dir": str(root / "broken")})
        assert r.status_code == 409 and "faiss" in r.json()["error"]["message"], r.text
        still = (await client.post("/v1/recommendations", json=_body())).json()
        assert still | {"took_ms": 0} == after | {"took_ms": 0}
        given = (await client.post("/v1/recommendations", json=_body(candidates=["v1", "v2"], k=2))).json()
        assert {i["source"] for i in given["items"]} == {"given"}
