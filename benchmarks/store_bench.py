"""The online store's clients side by side in one run, on one Redis and on a 3-master Redis Cluster:

  read      the request path's read: one MGET of the meta record, 1 user and N item records (JSON,
            the layout of `recsys.store`), N = 200 and 500, one request at a time (light load), p50/p99;
            glide+decode is the shipped `RedisStore.read` (the MGET and the JSON decode of the records)
  write     bulk record writes (materialize's write phase): 1 M records in chunks of 2000, 4 chunks in
            flight, records/s; "replace" = `--counters replace` (MSET), "merge" = the default re-run
            (the recsys_v2_put function: one call per chunk on one Redis, one per run of keys of one slot
            on a cluster: here a key's neighbours lie in other slots, materialize orders them by slot)

Clients: valkey-glide (`recsys.store.redis.RedisStore`, the one shipped), redis-py with the hiredis
parser (`redis.asyncio`, its cluster client on the cluster) and, on one Redis only, the hand-written
RESP client this project used before (`--baseline DIR`: a checkout of the previous commit), reading
that commit's layout (HGETALL of the user + one HMGET of the attribute and counter fields per item).
With `--materialize RAW` (raw tables of the synthetic spec, e.g. `recsys generate --users 1000000
--items 1000000`), `recsys materialize`'s own path too: reading and counting, then writing every user and
item record, into one Redis and into the cluster (merge mode, the default), on an empty store and again
over the records of that first run ("materialize/again": every record merged with a stored one);
`--only-materialize` runs these cells alone. Prints a table and one JSON line (the last line of stdout).

    python benchmarks/store_bench.py --baseline /tmp/store-base [--requests 2000] [--records 1000000] \
        [--materialize /work/bench-data/store/raw-1m [--only-materialize]]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.store.redis import RedisStore  # noqa: E402
from tests.cluster import RedisCluster  # noqa: E402
from tests.integration.redis_proc import RedisProcess  # noqa: E402

SIZES = (200, 500)
ATTRS = {"creator_id": "c123", "category": "cat7", "duration_s": "31.5", "upload_time": "1767225769"}
COUNTERS = {"item_history:c": 120, "item_history:p": 14, **{f"item_last_week:c@{b}": 9 for b in range(20450, 20458)},
            **{f"item_last_week:p@{b}": 1 for b in range(20450, 20458)}}


def percentiles(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    for _ in range(min(50, n)):
        await fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return percentiles(out)


def keys_for(n_items: int, offset: int) -> list[str]:
    base = "bench:v1:"
    return [f"{base}meta", f"{base}{{u:{offset}}}", *[f"{base}{{i:{offset + i}}}" for i in range(n_items)]]


async def fill(store: RedisStore, n: int) -> None:
    record = ([ATTRS] * 1000, [COUNTERS] * 1000)
    for a in range(0, n, 1000):
        keys = ["bench:v1:meta", *[f"bench:v1:{{u:{i}}}" for i in range(a, a + 500)],
                *[f"bench:v1:{{i:{i}}}" for i in range(a, a + 499)]]
        await store.write(keys, *record)


async def redis_py_client(url: str, cluster: bool) -> Any:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster as AioCluster

    if cluster:
        host, port = url.split("//")[1].split(",")[0].split(":")
        return AioCluster(host=host, port=int(port))
    return aioredis.from_url(url)


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def baseline_store(baseline: Path, url: str) -> Any:
    """The previous commit's RedisStore, importing that commit's `recsys.store.base` (swapped in for
    the import only)."""
    ours = sys.modules["recsys.store.base"]
    sys.modules["recsys.store.base"] = _load("baseline_base", baseline / "recsys" / "store" / "base.py")
    try:
        return _load("baseline_redis", baseline / "recsys" / "store" / "redis.py").RedisStore(url)
    finally:
        sys.modules["recsys.store.base"] = ours


async def bench_size(n: int, glide_store: RedisStore, py: Any, cluster: bool, baseline: Path | None,
                     requests: int, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    offsets = iter(rng.integers(0, 19_000 - n, size=10 * requests).tolist())
    out[f"read{n}/glide+decode"] = await timed(lambda: glide_store.read(keys_for(n, next(offsets))), requests)
    raw = await glide_store._client("read")
    out[f"read{n}/glide"] = await timed(lambda: raw.mget(keys_for(n, next(offsets))), requests)
    mget = py.mget_nonatomic if cluster else py.mget
    out[f"read{n}/redis-py"] = await timed(lambda: mget(keys_for(n, next(offsets))), requests)
    if baseline is not None and not cluster:
        old = baseline_store(baseline, glide_store.name)
        fields = [*ATTRS, *COUNTERS]
        users, items = [f"old:u:{i}" for i in range(n)], [f"old:i:{i}" for i in range(n)]
        old_record = {**ATTRS, **{k: str(v) for k, v in COUNTERS.items()}}
        await old.write([*users, *items], [old_record] * 2 * n)
        out[f"read{n}/hand-written"] = await timed(lambda: old.read(["old:meta", users[0]], items, fields), requests)
        await old.close()
    return out


async def bench_reads(url: str, cluster: bool, baseline: Path | None, requests: int) -> dict[str, Any]:
    glide_store = RedisStore(url, timeout_s=5.0)
    await fill(glide_store, 20_000)
    py = await redis_py_client(url, cluster)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for n in SIZES:
        out.update(await bench_size(n, glide_store, py, cluster, baseline, requests, rng))
    await (py.aclose() if hasattr(py, "aclose") else py.close())
    await glide_store.close()
    return out


async def bench_writes(url: str, records: int) -> dict[str, Any]:
    store = RedisStore(url)
    attrs, counters = [ATTRS] * 2000, [COUNTERS] * 2000
    out = {}
    for mode, keep in (("replace", False), ("merge", True)):
        t0 = time.perf_counter()
        pending: set[asyncio.Task[int]] = set()
        for a in range(0, records, 2000):
            if len(pending) >= 4:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            keys = [f"w:v1:{{u:{i}}}" for i in range(a, a + 2000)]
            pending.add(asyncio.ensure_future(store.write(keys, attrs, counters, keep_counters=keep)))
        await asyncio.gather(*pending)
        seconds = time.perf_counter() - t0
        out[f"write/{mode}"] = {"records": records, "seconds": round(seconds, 2),
                                "records_per_s": round(records / seconds)}
    await store.close()
    return out


async def bench_materialize(url: str, raw: Path) -> dict[str, Any]:
    """`materialize` into an empty store, then again over its records (the merge of a re-run)."""
    from recsys.spec import load_spec
    from recsys.store.keys import KeySpace
    from recsys.store.materialize import materialize

    store = RedisStore(url)
    out = {}
    for cell in ("materialize", "materialize/again"):
        lines: list[str] = []
        t0 = time.perf_counter()
        counts = await materialize(load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml"), raw, store,
                                   KeySpace("mat", "bench"), log=lines.append)
        seconds = time.perf_counter() - t0
        records = sum(counts.values())
        out[cell] = {**counts, "seconds": round(seconds, 1), "records_per_s": round(records / seconds),
                     "log": lines[-1]}
    await store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, help="a checkout of the previous commit (its hand-written client)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--materialize", type=Path, help="raw tables of the synthetic spec to materialize")
    ap.add_argument("--only-materialize", action="store_true", help="skip the read and write cells")
    args = ap.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        from tests.conftest import free_port

        single = RedisProcess(free_port(), Path(tmp))
        cluster = RedisCluster(Path(tmp) / "cluster", masters=3, replicas=0)
        try:
            for name, url, is_cluster in (("redis", single.url, False), ("cluster", cluster.url, True)):
                results[name] = {}
                if not args.only_materialize:
                    results[name].update(asyncio.run(bench_reads(url, is_cluster, args.baseline, args.requests)))
                    results[name].update(asyncio.run(bench_writes(url, args.records)))
                if args.materialize:
                    results[name].update(asyncio.run(bench_materialize(url, args.materialize)))
        finally:
            single.stop()
            cluster.stop()
    print(f"{'cell':<24}{'one Redis':>26}{'3-master cluster':>26}")
    for cell in results["redis"]:
        row = [results[s].get(cell) for s in ("redis", "cluster")]
        text = [("-" if r is None else (f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f} ms" if "p50_ms" in r
                                        else f"{r['records_per_s']:,} rec/s")) for r in row]
        if cell.startswith("materialize"):
            text = [f"{r['records_per_s']:,} rec/s in {r['seconds']} s" for r in row if r]
        print(f"{cell:<24}{text[0]:>26}{text[1]:>26}")
    print(json.dumps({"bench": "store", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **results}))


if __name__ == "__main__":
    main()
