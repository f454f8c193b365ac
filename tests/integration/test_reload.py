"""/admin/reload swaps models under traffic; a corrupt, forged, non-finite or unmaterialized artifact
is refused (409) and the old model keeps serving; only folders below the models root are read."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import anyio
import httpx
import pytest

from recsys.artifact import load_artifact
from recsys.store.keys import KeySpace
from recsys.store.materialize import materialize
from recsys.store.redis import RedisStore
from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import reseal_artifact
from tests.unit.test_artifact import FORGERIES

from .conftest import TOKEN

pytestmark = pytest.mark.anyio
AUTH = {"authorization": f"Bearer {TOKEN}"}
BODY = {"user_id": "u1", "candidates": ["v1", "v2", "v3"], "context": {"timestamp": 1_767_225_769}, "k": 2}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _client(app) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


def _root(artifact: Path) -> Path:
    """pytest's base folder, above every session artifact (<base>/<fixture>0/model): the models root."""
    return artifact.parents[1]


async def test_reload_under_traffic_never_fails_a_request(tiny_artifact: Path, tiny_raw: Path,
                                                          windowed_artifact: Path) -> None:
    app = create_app(ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw, admin_token=TOKEN,
                                     models_root=_root(tiny_artifact)))
    old, new = load_artifact(tiny_artifact).version, load_artifact(windowed_artifact).version
    statuses: list[int] = []
    versions: list[str] = []
    async with app.router.lifespan_context(app), _client(app) as client:
        done = anyio.Event()

        async def traffic() -> None:
            while not done.is_set():
                r = await client.post("/v1/recommendations", json=BODY)
                statuses.append(r.status_code)
                versions.append(r.json().get("model_version", ""))
                await asyncio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(traffic)
            # A new feature version: the embedded store fills its keys before the swap.
            r = await client.post("/admin/reload", headers=AUTH, json={"model_dir": str(windowed_artifact)})
            await client.post("/v1/recommendations", json=BODY)
            done.set()
        assert r.status_code == 200, r.text
        assert r.json()["previous_version"] == old and r.json()["model_version"] == new
        after = await client.post("/v1/recommendations", json=BODY)
        assert after.json()["model_version"] == new
        assert "recsys_reloads_total{outcome=\"ok\"} 1.0" in (await client.get("/metrics")).text
    assert statuses and set(statuses) == {200}
    assert versions[0] == old and set(versions) <= {old, new}
    assert versions.count(old) > 3, "traffic must have run while the new model loaded"


async def test_corrupt_artifact_is_refused_and_the_old_model_keeps_serving(
        tiny_artifact: Path, tiny_raw: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_artifact, corrupt)
    data = bytearray((corrupt / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (corrupt / "model.safetensors").write_bytes(bytes(data))
    app = create_app(ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw, admin_token=TOKEN,
                                     models_root=tmp_path))
    async with app.router.lifespan_context(app), _client(app) as client:
        before = (await client.post("/v1/recommendations", json=BODY)).json()
        r = await client.post("/admin/reload", headers=AUTH, json={"model_dir": str(corrupt)})
        assert r.status_code == 409
        assert "does not match its hash" in r.json()["error"]["message"]
        r = await client.post("/admin/reload", headers=AUTH, json={"model_dir": str(tmp_path / "missing")})
        assert r.status_code == 409 and "recsys train" in r.json()["error"]["message"]
        after = await client.post("/v1/recommendations", json=BODY)
        assert after.status_code == 200 and after.json()["items"] == before["items"]
        assert after.json()["model_version"] == before["model_version"]


async def test_redis_reload_refuses_a_feature_version_nobody_materialized(
        redis_url: str, tiny_artifact: Path, tiny_raw: Path, windowed_artifact: Path) -> None:
    artifact = load_artifact(tiny_artifact)
    store = RedisStore(redis_url)
    await materialize(artifact.pipeline.spec, tiny_raw, store, KeySpace("reload", artifact.feature_version),
                      log=lambda _: None)
    await store.close()
    app = create_app(ServiceSettings(model_dir=tiny_artifact, redis_url=redis_url, key_prefix="reload",
                                     admin_token=TOKEN, models_root=_root(tiny_artifact)))
    async with app.router.lifespan_context(app), _client(app) as client:
        assert (await client.get("/readyz")).json()["status"] == "ready"
        r = await client.post("/admin/reload", headers=AUTH, json={"model_dir": str(windowed_artifact)})
        assert r.status_code == 409 and "recsys materialize" in r.json()["error"]["message"]
        same = await client.post("/admin/reload", headers=AUTH)  # same features: fine
        assert same.status_code == 200
        assert (await client.post("/v1/recommendations", json=BODY)).json()["model_version"] == artifact.version


async def test_admin_routes_are_closed_without_a_configured_token(tiny_artifact: Path, tiny_raw: Path) -> None:
    app = create_app(ServiceSettings(model_dir=tiny_artifact, raw_dir=tiny_raw))
    async with app.router.lifespan_context(app), _client(app) as client:
        r = await client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 403 and "RECSYS_ADMIN_TOKEN" in r.json()["error"]["message"]
        event = {"event_id": "e1", "user_id": "u", "item_id": "i", "label": 1}
        r = await client.post("/v1/events", headers=AUTH, json={"events": [event]})
        assert r.status_code == 403


@pytest.fixture
def reload_app(tiny_artifact: Path, tiny_raw: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A service whose models root is `tmp_path / "models"`, serving a copy of the tiny artifact."""
    root = tmp_path / "models"
    shutil.copytree(tiny_artifact, root / "current")
    return create_app(ServiceSettings(model_dir=root / "current", raw_dir=tiny_raw, admin_token=TOKEN)), root


async def _refused_and_still_serving(app, model_dir: str, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    async with app.router.lifespan_context(app), _client(app) as client:
        before = (await client.post("/v1/recommendations", json=BODY)).json()
        # ASCII JSON: a lone surrogate travels as the escape "\\ud800", as any client would send it
        r = await client.post("/admin/reload", headers={**AUTH, "content-type": "application/json"},
                              content=json.dumps({"model_dir": model_dir}).encode())
        assert r.status_code == status, r.text
        assert message in r.json()["error"]["message"]
        after = await client.post("/v1/recommendations", json=BODY)
        assert after.status_code == 200 and after.json() | {"took_ms": 0} == before | {"took_ms": 0}


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
async def test_a_rehashed_but_broken_artifact_is_a_409_and_the_old_model_keeps_serving(reload_app, forgery: str
                                                                                      ) -> None:
    app, root = reload_app
    damage, message = FORGERIES[forgery]
    shutil.copytree(root / "current", root / "forged")
    damage(root / "forged")
    reseal_artifact(root / "forged")
    await _refused_and_still_serving(app, str(root / "forged"), 409, message)


async def test_an_edited_popular_list_is_a_409(reload_app) -> None:  # type: ignore[no-untyped-def]
    app, root = reload_app
    shutil.copytree(root / "current", root / "edited")
    meta = json.loads((root / "edited" / "metadata.json").read_text())
    meta["popular_items"] = ["planted-item", *meta["popular_items"]]
    (root / "edited" / "metadata.json").write_text(json.dumps(meta))
    await _refused_and_still_serving(app, "edited", 409, "model_version does not match")


@pytest.mark.parametrize(("model_dir", "status", "message"), [
    ("x" * 300, 409, "File name too long"),
    ("models/\ud800", 422, "nicode"),  # "Unicode" from our validator or "unicode" from pydantic's JSON parser
    ("../outside", 403, "below the models root"),
    ("/etc", 403, "below the models root"),
    ("current/../../..", 403, "below the models root"),
    ("escape", 403, "below the models root"),  # a symlink inside the root, pointing out of it
])
async def test_reload_reads_only_below_the_models_root_and_bad_paths_are_4xx(
        reload_app, tiny_artifact: Path, model_dir: str, status: int, message: str) -> None:
    app, root = reload_app
    (root / "escape").symlink_to(tiny_artifact, target_is_directory=True)
    await _refused_and_still_serving(app, model_dir, status, message)


async def test_a_relative_path_is_read_below_the_models_root(reload_app) -> None:  # type: ignore[no-untyped-def]
    app, root = reload_app
    shutil.copytree(root / "current", root / "next")
    async with app.router.lifespan_context(app), _client(app) as client:
        r = await client.post("/admin/reload", headers=AUTH, json={"model_dir": "next"})
        assert r.status_code == 200, r.text
