"""Shared fixtures: a real redis-server on a free port (no stand-ins), tiny synthetic data, a tiny
trained artifact. Heavier fixtures are session-scoped so the suite stays within minutes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = REPO.parent / "shared" / "data" / "movielens-100k"


def items_by_positives(raw: Path) -> list[str]:
    """Item ids of the raw impressions by positive events, best first; ties by id descending, as
    Redis's ZREVRANGE orders equal scores: the expected popularity ranking."""
    import pandas as pd

    imp = pd.read_parquet(raw / "impressions.parquet")
    positives = imp.assign(item=imp["item_id"].astype(str)).groupby("item")["label"].sum().reset_index()
    return positives.sort_values(["label", "item"], ascending=False)["item"].tolist()


def reseal_artifact(path: Path, *, keep_version: bool = False) -> None:
    """Make metadata.json agree with edited files (their hashes and the content version), as a
    careless hand-edit or a forgery would: only the deeper checks can refuse such an artifact."""
    import json

    from recsys.artifact import content_version, file_hashes

    meta = json.loads((path / "metadata.json").read_text())
    meta["files"] = file_hashes(path)
    if not keep_version:
        meta["model_version"] = content_version(meta)
    (path / "metadata.json").write_text(json.dumps(meta))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A private redis-server for the test session, stopped afterwards."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (fix: apt-get install -y redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small synthetic raw tables (seeded): 400 users, 300 items, 20k impressions."""
    from pipelines.generate import SyntheticConfig, write

    out = tmp_path_factory.mktemp("raw")
    write(SyntheticConfig(users=400, items=300, impressions=20_000, days=10, seed=7), out)
    return out


def synthetic_labels_at_once() -> dict[str, Any]:
    """The shipped synthetic spec without its `label_delay`: the fixtures below are replayed through
    the service by posting each impression together with its label (labels known at once). Tests of
    the 10-minute delay: tests/unit/test_delayed_labels.py, tests/spark."""
    data = yaml.safe_load((REPO / "pipelines" / "specs" / "synthetic.yaml").read_text())
    data.pop("label_delay")
    return dict(data)


@pytest.fixture(scope="session")
def tiny_features(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.build_features import build_features
    from recsys.spec import parse_spec

    out = tmp_path_factory.mktemp("features") / "features"
    build_features(parse_spec(synthetic_labels_at_once()), tiny_raw, out, log=lambda _: None, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tiny_features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.train import run_train

    out = tmp_path_factory.mktemp("artifact") / "model"
    run_train(tiny_features, out, {"epochs": 2}, log=lambda _: None, progress=False)
    return out


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """MovieLens 100K, read where it lies (never copied into the repo). RECSYS_MOVIELENS overrides the
    default ../shared/data/movielens-100k, e.g. for a clone outside /work. Missing data FAILS the test:
    CI has ../shared beside the repo, so a skip would hide a broken set-up."""
    import os

    path = Path(os.environ.get("RECSYS_MOVIELENS", MOVIELENS))
    if not (path / "u.data").is_file():
        pytest.fail(f"MovieLens 100K not found at {path} (u.data missing); fix: put ../shared/data/movielens-100k "
                    f"beside the repo or set RECSYS_MOVIELENS=/path/to/ml-100k")
    return path


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A private 3-master + 3-replica Redis Cluster for the test session (`tests/cluster.py`)."""
    from tests.cluster import RedisCluster

    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster) -> str:
    return redis_cluster.url
