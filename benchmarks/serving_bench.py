"""Serving latency, side by side in one run (one torch thread everywhere):

  forward        the bare model forward on pre-encoded candidates: the floor
  forward-plain  the same without taking the first layer's product over shared columns once
                 (recsys.model.WideDeep._mlp; from 128 candidates), timed alternately with forward
  raw→scores     FeaturePipeline.transform + forward from raw column values (the issue's 1.5 ms target)
  rank/redis     in-process Ranker.rank: one Redis round trip + assemble + transform + forward + top-k
  rank/embedded  the same with the embedded store
  http/redis     POST /v1/recommendations against a live uvicorn (1 worker) on Redis, one request at a
                 time ("light load"), client on the same machine
  .../baseline   (--baseline DIR) the same against DIR's code (another commit), each request sent to both
                 servers in turn: an interleaved A/B in one run
  http/cluster   (--cluster) the same on a 3-master Redis Cluster
  http/redis/retrieve500
                 the same without candidates, for an artifact with a retrieval part (`recsys
                 train-retrieval` + `recsys index`): user tower → ANN top-500 ∪ popular → seen filter
                 → rank them all → top-10

p50/p99 over --requests requests per cell, users drawn from the users table (plus 10% cold ones),
candidates sampled from the items table. Prints a table and one JSON line (last line of stdout).

    python benchmarks/serving_bench.py                      # builds a bench dataset + artifact under runs/bench
    python benchmarks/serving_bench.py --model DIR --raw DIR  # an existing artifact and its raw tables

Redis: a private redis-server on a free port is started (and stopped) unless --redis-url is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import recsys.model  # noqa: E402
from recsys.artifact import load_artifact  # noqa: E402
from recsys.online import Ranker, Rows, assemble, plan_read  # noqa: E402
from recsys.online.retriever import materialize_seen  # noqa: E402
from recsys.store.materialize import materialize  # noqa: E402
from recsys.store.memory import MemoryStore  # noqa: E402
from recsys.store.redis import RedisStore  # noqa: E402
from service.lifecycle import freeze_long_lived  # noqa: E402
from tests.cluster import RedisCluster  # noqa: E402

SIZES = (200, 500, 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_bench_artifact(out: Path) -> tuple[Path, Path]:
    """Synthetic data at the demo's entity counts and an artifact with the demo's architecture.
    The weights are untrained (latency does not depend on their values), which saves minutes."""
    from pipelines.build_features import build_features
    from pipelines.generate import SyntheticConfig, write
    from pipelines.train import load_features, popular_items
    from recsys.artifact import save_artifact
    from recsys.features.splits import read_split
    from recsys.model import WideDeep, WideDeepConfig
    from recsys.spec import load_spec

    raw, feats, model = out / "raw", out / "features", out / "model"
    if (model / "metadata.json").is_file():
        return model, raw
    write(SyntheticConfig(users=5000, items=3000, impressions=100_000, seed=1), raw)
    build_features(load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml"), raw, feats, log=lambda _: None,
                   progress=False)
    spec, pipeline, _ = load_features(feats)
    torch.manual_seed(0)
    net = WideDeep(WideDeepConfig.from_layout(pipeline.layout, spec.model))
    save_artifact(model, pipeline, net.eval(), {"popular_items": popular_items(read_split(feats, "train")[1], spec)})
    return model, raw


def pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "min_ms": round(float(a.min()), 3), "mean_ms": round(float(a.mean()), 3), "n": len(a)}


class Workload:
    def __init__(self, raw: Path, spec: Any, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.users = pd.read_parquet(raw / "users.parquet")[spec.user_key].astype(str).to_numpy()
        self.items = pd.read_parquet(raw / "items.parquet")[spec.item_key].astype(str).to_numpy()
        self.ts = int(pd.read_parquet(raw / "impressions.parquet", columns=[spec.timestamp])[spec.timestamp].max())

    def request(self, n: int) -> tuple[str, list[str], dict[str, Any]]:
        user = str(self.rng.choice(self.users)) if self.rng.random() > 0.1 else f"cold-{self.rng.integers(1 << 30)}"
        cands = self.rng.choice(self.items, size=n, replace=n > len(self.items)).tolist()
        return user, cands, {"device": str(self.rng.choice(["ios", "android", "web"])), "timestamp": self.ts}


async def timed(fn: Callable[[], Awaitable[Any]] | Callable[[], Any], n: int, warmup: int = 50) -> list[float]:
    out = []
    for i in range(n + warmup):
        t0 = time.perf_counter()
        r = fn()
        if asyncio.iscoroutine(r):
            await r
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


async def in_process(ranker: Ranker, redis: RedisStore, memory: MemoryStore, work: Workload,
                     n_req: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for size in SIZES:
        # Fixed raw columns per size for the floor and raw→scores cells (what the store would return).
        user, cands, ctx = work.request(size)
        rows = Rows.for_user(user, np.array(cands, dtype=object), ctx["timestamp"], {"device": ctx["device"]})
        read = plan_read(ranker.plan, ranker.keys, rows)
        cols = assemble(ranker.plan, rows, read, await redis.read(read.keys))
        enc = ranker.predictor.pipeline.transform(cols)
        # The two forwards alternate call by call, so that a drift of the machine's speed hits both.
        split_from = recsys.model.SHARED_COLUMNS_MIN_ROWS
        times: dict[str, list[float]] = {"forward": [], "forward-plain": []}
        for i in range(2 * (n_req + 50)):
            name = ("forward", "forward-plain")[i % 2]
            recsys.model.SHARED_COLUMNS_MIN_ROWS = split_from if name == "forward" else 1 << 62
            t0 = time.perf_counter()
            ranker.predictor.score_encoded(enc)
            if i >= 100:
                times[name].append(time.perf_counter() - t0)
        recsys.model.SHARED_COLUMNS_MIN_ROWS = split_from
        results.update({f"{name}/{size}": pct(t) for name, t in times.items()})
        results[f"raw→scores/{size}"] = pct(await timed(lambda c=cols: ranker.predictor.score(c), n_req))
        for name, store in (("redis", redis), ("embedded", memory)):
            stages: list[Any] = []

            async def one(size: int = size, store: Any = store, stages: list[Any] = stages) -> None:
                u, c, x = work.request(size)
                r = await ranker.rank(store, u, c, x["timestamp"], {"device": x["device"]}, 10)
                stages.append(r.timings)

            cell = pct(await timed(one, n_req))
            cell["stages_p50_ms"] = {k: round(float(np.median([getattr(t, k) for t in stages[-n_req:]])) * 1e3, 3)
                                     for k, _ in stages[0].items()}
            results[f"rank/{name}/{size}"] = cell
    return results


def start_service(model: Path, redis_url: str, prefix: str, root: Path = REPO) -> tuple[subprocess.Popen[bytes], Any]:
    """One uvicorn worker (1 torch thread) of the code under `root` on Redis, and one keep-alive
    connection from the stdlib client (the lightest client, so the 2 shared cores go to the server)."""
    import http.client

    port = free_port()
    env = {**os.environ, "RECSYS_MODEL_DIR": str(model), "REDIS_URL": redis_url, "RECSYS_KEY_PREFIX": prefix,
           "RECSYS_TORCH_THREADS": "1", "PYTHONPATH": str(root)}
    log = tempfile.NamedTemporaryFile(prefix="uvicorn-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--host",
                             "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.time() + 90
    while True:
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().read() and conn.sock is not None:
                return proc, conn
        except OSError:
            conn.close()
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"uvicorn did not start: {Path(log.name).read_text()[-2000:]}")
        time.sleep(0.2)


def http_bench(servers: dict[str, tuple[subprocess.Popen[bytes], Any]], work: Workload, n_req: int,
               size: int | None) -> dict[str, Any]:
    """POST /v1/recommendations one request at a time, the same request to every server in turn
    (an interleaved A/B: a drift of the machine's speed hits all of them alike). `size` None: no
    candidates (the retrieval path)."""
    headers = {"content-type": "application/json"}
    for _, conn in servers.values():
        conn.close()  # idle past uvicorn's keep-alive while the others started: the next request reconnects
    lat: dict[str, list[float]] = {name: [] for name in servers}
    took: dict[str, list[float]] = {name: [] for name in servers}
    degraded = dict.fromkeys(servers, 0)
    for i in range(n_req + 100):
        u, c, x = work.request(size or 1)
        body = json.dumps({"user_id": u, "context": x, "k": 10, **({"candidates": c} if size else {})})
        for name, (_, conn) in servers.items():
            t0 = time.perf_counter()
            conn.request("POST", "/v1/recommendations", body, headers)
            resp = conn.getresponse()
            data = resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 200:
                raise RuntimeError(f"{name}: HTTP {resp.status}: {data[:300]!r}")
            answer = json.loads(data)
            if i >= 100:
                degraded[name] += answer.get("degraded") is not None  # the store missed the 30 ms budget
                lat[name].append(dt)
                took[name].append(answer["took_ms"] / 1e3)
    out = {}
    for name, (proc, conn) in servers.items():
        conn.close()
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
        out[name] = {**pct(lat[name]), "handler_p50_ms": pct(took[name])["p50_ms"], "degraded": degraded[name],
                     "server_peak_rss_mb": round(rss, 1)}
    return out


def fill_baseline(baseline: Path, model: Path, raw: Path, redis_url: str, prefix: str) -> None:
    """`materialize` of the baseline checkout (its own key layout), in a process of its own."""
    code = ("import asyncio; from recsys.artifact import load_artifact; from recsys.store.keys import KeySpace; "
            "from recsys.store.materialize import materialize; from recsys.store.redis import RedisStore\n"
            "async def go():\n"
            f"    a = load_artifact({str(model)!r}); s = RedisStore({redis_url!r})\n"
            f"    await materialize(a.pipeline.spec, {str(raw)!r}, s, KeySpace({prefix!r}, a.feature_version), "
            "log=lambda _: None)\n"
            "    await s.close()\n"
            "asyncio.run(go())")
    subprocess.run([sys.executable, "-c", code], cwd=baseline, env={**os.environ, "PYTHONPATH": str(baseline)},
                   check=True)


def start_redis() -> tuple[subprocess.Popen[bytes], str, Path]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: install it or pass --redis-url")
    port, workdir = free_port(), Path(tempfile.mkdtemp(prefix="bench-redis-"))
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0", workdir


def table(results: dict[str, Any]) -> str:
    head = "stages p50 ms (fetch/assemble/transform/score/topk)"
    lines = [f"{'cell':<24}{'p50 ms':>9}{'p99 ms':>9}{'min ms':>9}  {head}"]
    for name, r in results.items():
        if not isinstance(r, dict) or "p50_ms" not in r:
            continue
        st = r.get("stages_p50_ms")
        extra = " / ".join(f"{v:.3f}" for v in st.values()) if st else (
            f"handler p50 {r['handler_p50_ms']:.3f}, {r['degraded']} degraded" if "handler_p50_ms" in r else "")
        lines.append(f"{name:<24}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['min_ms']:>9.3f}  {extra}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    model, raw = (Path(args.model), Path(args.raw)) if args.model else build_bench_artifact(Path(args.out))
    artifact = load_artifact(model)
    ranker = Ranker(artifact, prefix="bench")
    ranker.warm_up()
    work = Workload(raw, artifact.pipeline.spec)
    redis_proc, redis_url, workdir = (None, args.redis_url, None) if args.redis_url else start_redis()
    cluster: RedisCluster | None = None
    try:
        redis = RedisStore(redis_url, timeout_s=1.0)
        memory = MemoryStore()
        for store in (redis, memory):
            await materialize(artifact.pipeline.spec, raw, store, ranker.keys, log=lambda _: None)
        if "retrieval" in artifact.metadata:
            await materialize_seen(artifact.pipeline.spec, raw, redis, ranker.keys)
        freeze_long_lived()  # as the service does after start-up: the collector skips what is loaded
        results: dict[str, Any] = await in_process(ranker, redis, memory, work, args.requests)
        await redis.close()
        servers = {"http/redis/200": start_service(model, redis_url, "bench")}
        if args.baseline:
            fill_baseline(Path(args.baseline), model, raw, redis_url, "base")
            servers["http/redis/200/baseline"] = start_service(model, redis_url, "base", Path(args.baseline))
        if args.cluster:
            cluster = RedisCluster(Path(tempfile.mkdtemp(prefix="bench-cluster-")), masters=3, replicas=0)
            store = RedisStore(cluster.url, timeout_s=1.0)
            await materialize(artifact.pipeline.spec, raw, store, ranker.keys, log=lambda _: None)
            await store.close()
            servers["http/cluster/200"] = start_service(model, cluster.url, "bench")
        try:
            results.update(http_bench(servers, work, args.requests, 200))
            if "retrieval" in artifact.metadata:
                retrieval = {"http/redis/retrieve500": servers["http/redis/200"]}
                results.update(http_bench(retrieval, work, args.requests, None))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        if cluster is not None:
            cluster.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
            shutil.rmtree(workdir, ignore_errors=True)  # type: ignore[arg-type]
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["model"] = {"version": artifact.version, "embedding_rows": artifact.model.config.embedding_rows,
                        "wide_rows": artifact.model.config.wide_rows, "hidden": list(artifact.model.config.hidden)}
    results["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="artifact folder (default: build one under --out)")
    p.add_argument("--raw", help="raw tables of --model (fills the stores)")
    p.add_argument("--out", default=str(REPO / "runs" / "bench"), help="where the bench dataset/artifact goes")
    p.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    p.add_argument("--requests", type=int, default=1000, help="timed requests per cell")
    p.add_argument("--baseline", help="a checkout of another commit: its service is timed beside this one's "
                                      "(interleaved A/B on the same Redis, each with its own key layout)")
    p.add_argument("--cluster", action="store_true", help="also time the service on a 3-master Redis Cluster")
    args = p.parse_args()
    if bool(args.model) != bool(args.raw):
        p.error("--model and --raw go together")
    results = asyncio.run(main_async(args))
    print(table(results))
    print(f"peak RSS (bench process): {results['peak_rss_mb']} MB; "
          f"uvicorn worker: {results['http/redis/200']['server_peak_rss_mb']} MB; "
          f"load average at end: {results['machine']['loadavg_1m_at_end']}")
    print(json.dumps({"benchmark": "serving", **results}, ensure_ascii=False))


if __name__ == "__main__":
    main()
