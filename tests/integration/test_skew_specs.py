"""Zero skew for EVERY shipped spec (pipelines/specs: synthetic, MovieLens time split, MovieLens
random split), on one Redis and on a 3-master Redis Cluster: a live uvicorn serves the offline
probabilities of a test-split replay, and POST /v1/events rebuilds the offline point-in-time
statistics, including MovieLens's item x user-attribute ones (item_gender_history,
item_age_history) and its multi-hot, windowed and datetime features, and the synthetic spec's
10-minute label delay (labels posted late by impression id, POST /v1/labels). A few hundred rows per spec:
the full-size replay of the synthetic spec is `test_skew.py`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from recsys.artifact import load_artifact
from recsys.store.keys import KeySpace
from recsys.store.materialize import materialize
from recsys.store.redis import RedisStore
from tests.conftest import REPO

from .conftest import TOKEN, random_artifact, start_uvicorn
from .replay import replay, replay_start

pytestmark = [pytest.mark.redis, pytest.mark.movielens]
SPECS = sorted(p.stem for p in (REPO / "pipelines" / "specs").glob("*.yaml"))


@pytest.fixture(scope="module")
def movielens_raw(movielens_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.movielens import import_movielens

    out = tmp_path_factory.mktemp("ml-raw")
    import_movielens(movielens_dir, out)
    return out


@pytest.fixture(scope="module", params=SPECS)
def served_spec(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(raw, features, random-weight artifact) of one shipped spec."""
    from pipelines.build_features import build_features
    from recsys.spec import load_spec

    name = request.param
    raw = request.getfixturevalue("tiny_raw" if name == "synthetic" else "movielens_raw")
    out = tmp_path_factory.mktemp(f"spec-{name}")
    build_features(load_spec(REPO / "pipelines" / "specs" / f"{name}.yaml"), raw, out / "features",
                   log=lambda _: None, progress=False)
    return raw, out / "features", random_artifact(out / "features", out / "model")


@pytest.mark.parametrize("backend", ["redis", "cluster"])
def test_every_shipped_spec_serves_the_offline_probabilities_and_statistics(
        served_spec: tuple[Path, Path, Path], backend: str, request: pytest.FixtureRequest,
        tmp_path: Path) -> None:
    raw, features, model = served_spec
    url = request.getfixturevalue("redis_url" if backend == "redis" else "redis_cluster_url")
    artifact = load_artifact(model)
    prefix = f"skew-{backend}"

    async def fill() -> None:
        store = RedisStore(url)
        await materialize(artifact.pipeline.spec, raw, store, KeySpace(prefix, artifact.feature_version),
                          as_of=replay_start(features, artifact.pipeline.spec.label_delay_s), log=lambda _: None,
                          keep_counters=False)
        await store.close()

    asyncio.run(fill())
    proc, base = start_uvicorn({"RECSYS_MODEL_DIR": str(model), "REDIS_URL": url, "RECSYS_KEY_PREFIX": prefix,
                                "RECSYS_ADMIN_TOKEN": TOKEN, "RECSYS_STORE_BUDGET_MS": "10000"}, tmp_path / "log")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            r = replay(client.post, raw, features, model, TOKEN, min_rows=300)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert len(r.online) >= 300 and r.offline.std() > 0.01
    np.testing.assert_allclose(r.online, r.offline, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(r.online_counters.to_numpy(), r.offline_counters.to_numpy())
    by_user_attribute = [c for c in r.online_counters if c.startswith(("item_gender_history", "item_age_history"))]
    if artifact.pipeline.spec.name.startswith("movielens"):
        assert by_user_attribute and (r.online_counters[by_user_attribute].to_numpy() > 0).any()
