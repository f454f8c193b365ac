"""One contract, three backends: the embedded store must behave exactly like Redis, on one server
and on a 3-master Redis Cluster (real servers)."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from typing import AsyncIterator

import pytest

from recsys.errors import StoreError
from recsys.store.base import OnlineStore
from recsys.store.memory import MemoryStore
from recsys.store.redis import RedisStore, Target

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[OnlineStore]:
    if request.param == "memory":
        s: OnlineStore = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_url" if request.param == "redis" else "redis_cluster_url"))
    yield s
    await s.close()


@pytest.fixture
def k() -> str:
    """A fresh key namespace per test: the servers are shared by the session."""
    return f"t{uuid.uuid4().hex[:8]}:"


async def test_missing_records_read_as_none(store: OnlineStore, k: str) -> None:
    assert await store.read([k + "nobody", k + "x"]) == [None, None]
    assert await store.read([]) == []


async def test_written_records_read_back_in_key_order(store: OnlineStore, k: str) -> None:
    keys = [f"{k}{{u:{i}}}" for i in range(50)]  # spread over the cluster's slots
    await store.write(keys, [{"n": str(i), "géo": "日本"} for i in range(50)], [{"s:c": i} for i in range(50)])
    records = await store.read([keys[7], k + "missing", *keys])
    assert records[0] == {"a": {"n": "7", "géo": "日本"}, "c": {"s:c": 7}} and records[1] is None
    assert [r["a"]["n"] for r in records[2:] if r] == [str(i) for i in range(50)]


async def test_write_replaces_whole_records_and_empty_ones_are_deleted(store: OnlineStore, k: str) -> None:
    await store.write([k + "r", k + "s"], [{"old": "1", "keep": "a"}, {"x": "1"}], [{"n:c": 3}, {}])
    await store.write([k + "r", k + "s"], [{"keep": "b"}, {}], [{}, {}])
    assert await store.read([k + "r", k + "s"]) == [{"a": {"keep": "b"}, "c": {}}, None]


async def test_keep_counters_replaces_attributes_and_keeps_live_counts(store: OnlineStore, k: str) -> None:
    await store.write([k + "u"], [{"age": "30"}], [{"s:c": 5, "s:p": 1}])
    await store.increment([k + "u"], [{"s:c": 2}])  # an event counted after the first materialize
    await store.write([k + "u", k + "new"], [{"age": "31"}, {"age": "9"}], [{"s:c": 5, "t:c": 4}, {"s:c": 1}],
                      keep_counters=True)
    assert await store.read([k + "u", k + "new"]) == [
        {"a": {"age": "31"}, "c": {"s:c": 7, "s:p": 1, "t:c": 4}}, {"a": {"age": "9"}, "c": {"s:c": 1}}]
    await store.write([k + "u"], [{"age": "31"}], [{"s:c": 5}])  # --counters replace
    assert await store.read([k + "u"]) == [{"a": {"age": "31"}, "c": {"s:c": 5}}]


async def test_json_merges_over_many_slots_keep_each_records_stored_counters(store: OnlineStore, k: str) -> None:
    keys = [f"{k}{{u:{i}}}" for i in range(300)]  # unordered slots: one merge call per run of one slot
    await store.write(keys[::2], [{"n": "old"}] * 150, [{"s:c": 100}] * 150)
    await store.write_json(keys, [b'{"n":"%d"}' % i for i in range(300)],
                           [b'{"s:c":%d,"t:c":1}' % i for i in range(300)], keep_counters=True)
    assert await store.read(keys) == [{"a": {"n": str(i)}, "c": {"s:c": 100 if i % 2 == 0 else i, "t:c": 1}}
                                      for i in range(300)]


async def test_increments_add_and_create_records(store: OnlineStore, k: str) -> None:
    await store.write([k + "u"], [{"name": "n"}], [{"c": 2}])
    await store.increment([k + "u", k + "new"], [{"c": 1, "p": 0}, {"c": 5}])
    await store.increment([k + "u"], [{"c": 1}])
    assert await store.read([k + "u", k + "new"]) == [{"a": {"name": "n"}, "c": {"c": 4, "p": 0}},
                                                       {"a": {}, "c": {"c": 5}}]


async def test_increments_drop_expired_window_buckets(store: OnlineStore, k: str) -> None:
    await store.increment([k + "u"], [{"w:c@1": 1, "w:c@2": 1, "w:x:c@2": 1, "v:c@1": 1, "all:c": 1}])
    await store.increment([k + "u"], [{"w:c@3": 1}], expired_before={"w:": 2})
    (rec,) = await store.read([k + "u"])
    assert rec == {"a": {}, "c": {"w:c@2": 1, "w:x:c@2": 1, "w:c@3": 1, "v:c@1": 1, "all:c": 1}}


async def test_claims_are_won_once_until_they_expire(store: OnlineStore, k: str) -> None:
    assert await store.claim([k + "e1", k + "e2", k + "e1"], ttl_s=1) == [True, True, False]
    assert await store.claim([k + "e1"], ttl_s=1) == [False]
    assert await store.claim([], ttl_s=1) == []
    await store.write([k + "e2"], [{}], [{}])  # an empty record deletes the claim: released
    assert await store.claim([k + "e2"], ttl_s=1) == [True]
    await asyncio.sleep(1.2)
    assert await store.claim([k + "e1"], ttl_s=1) == [True]


async def test_records_expire_after_their_ttl(store: OnlineStore, k: str) -> None:
    await store.write([k + "a", k + "b"], [{"x": "1"}, {"x": "2"}], [{}, {}], ttl_s=1)
    await store.increment([k + "c"], [{"n": 1}], ttl_s=1)
    await store.write([k + "d"], [{"x": "1"}], [{}], ttl_s=1)
    await store.increment([k + "d"], [{"n": 1}])  # without a ttl: the record keeps its own
    await asyncio.sleep(1.2)
    assert await store.read([k + "a", k + "b", k + "c", k + "d"]) == [None] * 4


async def test_ping_succeeds_on_a_live_store(store: OnlineStore) -> None:
    await store.ping()


async def test_unreachable_redis_is_a_store_error_naming_the_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    store = RedisStore(f"redis://127.0.0.1:{port}/0", connect_timeout_s=0.5)
    with pytest.raises(StoreError, match="cannot connect to redis"):
        await store.ping()
    await store.close()


async def test_a_silent_server_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    store = RedisStore(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout_s=0.05, connect_timeout_s=0.05)
    try:
        with pytest.raises(StoreError, match="did not answer|cannot connect"):
            await store.read(["k"])
    finally:
        await store.close()
        for c in accepted:
            c.close()
        listener.close()


@pytest.mark.parametrize("url", ["http://localhost:6379", "redis://localhost:6379/zero", "redis://a:1,b:2",
                                 "redis+cluster://a:1,b:x", "redis+cluster://a:1/2"])
def test_bad_redis_urls_are_refused_with_the_expected_form(url: str) -> None:
    with pytest.raises(StoreError, match="REDIS_URL"):
        RedisStore(url)


def test_urls_name_one_server_or_a_cluster_without_credentials() -> None:
    one = Target.parse("rediss://user:s%40cret@cache:6380/2")
    assert (one.nodes, one.cluster, one.db, one.username, one.password, one.tls) == (
        (("cache", 6380),), False, 2, "user", "s@cret", True)
    many = Target.parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")
    assert many.cluster and many.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001)) and many.password == "pw"
    assert str(many) == "redis+cluster://10.0.0.1:7000,10.0.0.2:7001" and "pw" not in str(one)


async def test_rankings_replace_add_and_read_top_members_like_zrevrange(store: OnlineStore, k: str) -> None:
    assert await store.top(f"{k}rank", 3) == []
    await store.write_ranking(f"{k}rank", ["a", "b", "c", "d"], [1.0, 5.0, 3.0, 3.0])
    assert await store.top(f"{k}rank", 3) == ["b", "d", "c"]  # equal scores: member descending
    assert await store.top(f"{k}rank", 10) == ["b", "d", "c", "a"] and await store.top(f"{k}rank", 0) == []
    await store.add_to_ranking(f"{k}rank", ["a", "new", "a", "ü"], [2.0, 4.5, 3.0, 0.5])  # duplicates summed
    assert await store.top(f"{k}rank", 3) == ["a", "b", "new"]
    await store.write_ranking(f"{k}rank", ["x"], [1.0])  # replaces the whole ranking
    assert await store.top(f"{k}rank", 5) == ["x"]
    await store.write_ranking(f"{k}gone", ["x"], [1.0], ttl_s=1)
    await asyncio.sleep(1.2)
    assert await store.top(f"{k}gone", 5) == []


async def test_ranking_writes_replace_whole_and_refuse_non_finite_scores(store: OnlineStore, k: str) -> None:
    many = [f"m{i:05d}" for i in range(10_001)]  # more than one ZADD chunk
    await store.write_ranking(f"{k}r", many, [float(i) for i in range(10_001)])
    assert await store.top(f"{k}r", 2) == ["m10000", "m09999"]
    with pytest.raises(ValueError, match="finite"):
        await store.write_ranking(f"{k}r", ["a", "b"], [1.0, float("nan")])
    with pytest.raises(ValueError, match="finite"):
        await store.add_to_ranking(f"{k}r", ["a"], [float("inf")])
    assert await store.top(f"{k}r", 1) == ["m10000"]  # nothing was written
    await store.write_ranking(f"{k}r", [], [])  # empty: the ranking is gone
    assert await store.top(f"{k}r", 1) == []


async def test_ranking_increments_set_its_expiry(store: OnlineStore, k: str) -> None:
    await store.add_to_ranking(f"{k}r", ["a"], [1.0], ttl_s=1)
    assert await store.top(f"{k}r", 1) == ["a"]
    await asyncio.sleep(1.2)
    assert await store.top(f"{k}r", 1) == []



async def test_a_service_of_another_version_reloading_its_library_leaves_ours_working(redis_url: str,
                                                                                       k: str) -> None:
    """A rolling upgrade: an older service on the same Redis re-loads ITS function library (FUNCTION
    LOAD REPLACE of its own name) while this one writes; ours keeps its own library and arguments."""
    import redis as redis_py

    from recsys.store.redis import LIBRARY

    store = RedisStore(redis_url)
    try:
        await store.write([k + "r"], [{"x": "1"}], [{"s:c": 1}], keep_counters=True)
        older = redis_py.Redis.from_url(redis_url)
        older.function_load("#!lua name=recsys\nredis.register_function('recsys_put', function(keys, args) "
                            "return 0 end)\nredis.register_function('recsys_add', function(keys, args) "
                            "return 0 end)", replace=True)
        older.function_load(LIBRARY, replace=True)  # a second service of this version: same library, no clash
        older.close()
        await store.write([k + "r"], [{"x": "2"}], [{"s:c": 5, "s:p": 1}], keep_counters=True)
        await store.increment([k + "r"], [{"s:c": 1}], {})
        assert await store.read([k + "r"]) == [{"a": {"x": "2"}, "c": {"s:c": 2, "s:p": 1}}]
    finally:
        await store.close()
