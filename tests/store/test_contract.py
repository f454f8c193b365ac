"""One contract, two backends: the embedded store must behave exactly like Redis (real server)."""

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
from recsys.store.redis import RedisStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[OnlineStore]:
    s: OnlineStore = MemoryStore() if request.param == "memory" else RedisStore(request.getfixturevalue("redis_url"))
    yield s
    await s.close()


@pytest.fixture
def k() -> str:
    """A fresh key namespace per test: the Redis server is shared by the session."""
    return f"t{uuid.uuid4().hex[:8]}:"


async def test_missing_records_read_as_empty_and_none(store: OnlineStore, k: str) -> None:
    records, flat = await store.read([k + "nobody"], [k + "x", k + "y"], ["a", "b"])
    assert records == [{}]
    assert flat == [None, None, None, None]


async def test_write_then_read_whole_and_fields_in_request_order(store: OnlineStore, k: str) -> None:
    await store.write([k + "1", k + "2"], [{"a": "1", "b": "x"}, {"a": "2"}])
    records, flat = await store.read([k + "2", k + "1"], [k + "2", k + "missing", k + "1"], ["b", "a"])
    assert records == [{"a": "2"}, {"a": "1", "b": "x"}]
    assert flat == [None, "2", None, None, "x", "1"]  # row-major: key after key


async def test_non_ascii_keys_fields_and_values_round_trip(store: OnlineStore, k: str) -> None:
    await store.write([k + "ü"], [{"géo": "日本", "e": ""}])
    records, flat = await store.read([k + "ü", k + "a"], [k + "a", k + "ü"], ["géo", "e"])
    assert records == [{"géo": "日本", "e": ""}, {}]
    assert flat == [None, None, "日本", ""]


async def test_write_replaces_the_whole_record_and_empty_deletes(store: OnlineStore, k: str) -> None:
    await store.write([k + "r", k + "s"], [{"old": "1", "keep": "a"}, {"x": "1"}])
    await store.write([k + "r", k + "s"], [{"keep": "b"}, {}])
    records, _ = await store.read([k + "r", k + "s"], [], [])
    assert records == [{"keep": "b"}, {}]


async def test_increment_creates_adds_and_sums_duplicates(store: OnlineStore, k: str) -> None:
    await store.write([k + "u"], [{"c": "2", "name": "n"}])
    await store.increment([k + "u", k + "u", k + "u", k + "new"], ["c", "c", "p", "c"], [1, 1, 0, 5])
    records, _ = await store.read([k + "u", k + "new"], [], [])
    assert records == [{"c": "4", "name": "n", "p": "0"}, {"c": "5"}]


async def test_increment_of_a_non_integer_fails_alone(store: OnlineStore, k: str) -> None:
    await store.write([k + "u"], [{"name": "n"}])
    with pytest.raises(StoreError, match="integer"):
        await store.increment([k + "u", k + "u"], ["name", "c"], [1, 1])
    records, _ = await store.read([k + "u"], [], [])
    assert records == [{"name": "n", "c": "1"}]  # like Redis MULTI: the valid increment applied


async def test_records_expire_after_their_ttl(store: OnlineStore, k: str) -> None:
    await store.write([k + "a", k + "b"], [{"x": "1"}, {"x": "2"}], ttl_s=1)
    await store.increment([k + "c"], ["n"], [1], ttl_s=1)
    await asyncio.sleep(1.3)
    records, _ = await store.read([k + "a", k + "b", k + "c"], [], [])
    assert records == [{}, {}, {}]


async def test_read_without_fields_returns_empty_rows(store: OnlineStore, k: str) -> None:
    records, flat = await store.read([], [k + "a", k + "b"], [])
    assert records == [] and flat == []


async def test_ping_succeeds_on_a_live_store(store: OnlineStore) -> None:
    await store.ping()


async def test_unreachable_redis_is_a_store_error_naming_the_fix() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    store = RedisStore(f"redis://127.0.0.1:{port}/0", connect_timeout_s=0.5)
    with pytest.raises(StoreError, match="cannot connect to redis"):
        await store.ping()


async def test_a_silent_server_times_out_without_poisoning_the_pool() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    store = RedisStore(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout_s=0.05)
    try:
        with pytest.raises(StoreError, match="did not answer"):
            await store.read([], ["k"], ["f"])
        assert store._idle == []  # the desynchronized connection was closed, not pooled
    finally:
        await store.close()
        for c in accepted:
            c.close()
        listener.close()


@pytest.mark.parametrize("url", ["http://localhost:6379", "redis://localhost:6379/zero"])
def test_bad_redis_urls_are_refused_with_the_expected_form(url: str) -> None:
    with pytest.raises(StoreError, match="redis"):
        RedisStore(url)


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


async def test_claim_is_true_only_for_the_first_claimer_until_it_expires(store: OnlineStore, k: str) -> None:
    assert await store.claim([k + "a", k + "b", k + "a"], 1) == [True, True, False]  # repeats in one call too
    assert await store.claim([k + "b", k + "c"], 1) == [False, True]
    assert await store.claim([], 1) == []
    await store.write([k + "c"], [{}])  # deleting a claim releases it
    assert await store.claim([k + "c"], 1) == [True]
    await asyncio.sleep(1.1)
    assert await store.claim([k + "a", k + "b"], 60) == [True, True]
    with pytest.raises(ValueError, match="TTL"):
        await store.claim([k + "d"], 0)
