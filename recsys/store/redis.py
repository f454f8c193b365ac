"""Redis backend, one server or a Redis Cluster, through valkey-glide (a maintained client), with
the request path's reads on ONE server through redis-py (hiredis).

Why: measured on the request path's read (one user + 200 / 500 candidate records, loopback) against
the hand-written RESP client this module replaces, glide is several times faster than redis-py on a
cluster (whose MGET it groups per node) and follows a cluster's slots, MOVED / ASK redirections and
failovers itself; on one server redis-py's MGET, which runs on the event loop instead of crossing to
glide's I/O thread, is ~0.1 ms faster per request (`benchmarks/store_bench.py`, `docs/store.md`).

URLs: `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS) for one server, and
`redis+cluster://[user:password@]host:port,host:port,...` (`rediss+cluster://`) for a cluster: any
reachable nodes seed the client, which discovers the rest.

- A request's read is ONE `MGET` of the meta, user and item records; on a cluster glide splits it
  per node and sends the parts in parallel.
- Counters change server-side, in the `recsys_v2` Redis Function library (`LIBRARY`, loaded by
  FUNCTION LOAD when the write client connects, and again when a restarted or new node lacks it; the
  version in its name lets two versions of the service share a Redis during an upgrade):
  `recsys_v2_add` adds amounts and drops expired window buckets (bounded records), `recsys_v2_put` writes
  a record keeping the counters already stored (a re-materialize merges with live events).
- Reads and writes use separate clients, so a burst of events or a materialize never queues in
  front of a ranking read; every call has a deadline (`timeout_s` reads, `write_timeout_s` writes).
- A client that keeps failing for `replace_after_s` is closed and created anew on the next call, so
  a failover or a restarted server is survived even when the old client is stuck on a dead node.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Literal, Mapping, Sequence, TypeVar
from urllib.parse import unquote

import glide
import hiredis
import numpy as np
import orjson
import redis as redis_py
import redis.asyncio
from glide import (
    AdvancedGlideClientConfiguration,
    AdvancedGlideClusterClientConfiguration,
    BackoffStrategy,
    Batch,
    ClusterBatch,
    ConditionalChange,
    ExpirySet,
    ExpiryType,
    GlideClient,
    GlideClientConfiguration,
    GlideClusterClient,
    GlideClusterClientConfiguration,
    NodeAddress,
    RangeByIndex,
    ServerCredentials,
)

from recsys.errors import StoreError
from recsys.store.base import Record, finite_scores
from recsys.store.keys import hash_slots

__all__ = ["RedisStore", "Target", "LIBRARY"]

T = TypeVar("T")
Client = GlideClient | GlideClusterClient
Role = Literal["read", "write"]

_ZADD_CHUNK = 10_000  # members per ZADD command in `write_ranking`
_RECORD = b'{"a":%b,"c":%b}'  # a record from its attributes' and counters' JSON objects
_BEFORE_COUNTERS = len(_RECORD % (b"", b"")) - len(b"}")  # the format's bytes before the counters object
_EMPTY_RECORD = _RECORD % (b"{}", b"{}")  # no attributes and no counters: `write` deletes the record

# The library's and its functions' names carry the version of their argument formats: during a
# rolling upgrade, services of two versions each load their own library (FUNCTION LOAD REPLACE of one
# name) and never replace the functions the other calls. Bump it with any change of arguments.
ADD, PUT = "recsys_v2_add", "recsys_v2_put"

# Counters: `c` of the record; a field `<statistic>:...@<bucket>` whose prefix is in `live` and whose
# bucket is below that prefix's first live bucket has left its window and is dropped.
LIBRARY = """#!lua name=recsys_v2
local function prune(c, live)
  for f, _ in pairs(c) do
    local b = string.match(f, "@(%-?%d+)$")
    if b then
      b = tonumber(b)
      for p, first in pairs(live) do
        if b < first and string.sub(f, 1, #p) == p then
          c[f] = nil
          break
        end
      end
    end
  end
end

local function set(key, v, ttl, keep_ttl)
  if ttl > 0 then return redis.call('SET', key, v, 'EX', ttl) end
  if keep_ttl then return redis.call('SET', key, v, 'KEEPTTL') end
  return redis.call('SET', key, v)
end

local function save(key, rec, ttl, keep_ttl)
  rec.a = rec.a or {}
  return set(key, cjson.encode(rec), ttl, keep_ttl)
end

-- keys: the record; args: amounts {field: n} (JSON), live {prefix: first bucket} (JSON), ttl (0 = keep)
redis.register_function('recsys_v2_add', function(keys, args)
  local old = redis.call('GET', keys[1])
  local rec = old and cjson.decode(old) or {a = {}, c = {}}
  local c = rec.c or {}
  for f, n in pairs(cjson.decode(args[1])) do c[f] = (c[f] or 0) + n end
  prune(c, cjson.decode(args[2]))
  rec.c = c
  return save(keys[1], rec, tonumber(args[3]), true)
end)

-- keys: records; args: ttl (0 = none), then per record "<bytes>:<prefix>," (its length, and the
-- length of its part before the counters object), then the records one after the other (JSON
-- {"a":{...},"c":{...}}). The counters already stored win, the new ones fill the fields that are
-- absent; a key without a record gets the record as given, no JSON parsed (a first materialize).
-- Packed in three arguments: a client converts each argument separately (~1 us apiece in glide).
redis.register_function('recsys_v2_put', function(keys, args)
  local ttl, records, at, i = tonumber(args[1]), args[3], 1, 1
  for n, prefix in string.gmatch(args[2], "(%d+):(%d+),") do
    local v = string.sub(records, at, at + n - 1)
    at, prefix = at + n, tonumber(prefix)
    local old = redis.call('GET', keys[i])
    if old then
      local kept = cjson.decode(old).c or {}
      for f, x in pairs(cjson.decode(string.sub(v, prefix + 1, -2))) do if kept[f] == nil then kept[f] = x end end
      v = string.sub(v, 1, prefix) .. cjson.encode(kept) .. '}'
    end
    set(keys[i], v, ttl, false)
    i = i + 1
  end
  return #keys
end)
"""


@dataclass(frozen=True)
class Target:
    """Where the store is: parsed from REDIS_URL, printed without credentials."""

    nodes: tuple[tuple[str, int], ...]
    cluster: bool
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "Target":
        scheme, sep, rest = url.partition("://")
        schemes = ("redis", "rediss", "redis+cluster", "rediss+cluster")
        if not sep or scheme not in schemes:
            raise StoreError(f"REDIS_URL must start with redis://, rediss://, redis+cluster:// or "
                             f"rediss+cluster://, got {url.split('@')[-1]!r}")
        cluster, tls = scheme.endswith("+cluster"), scheme.startswith("rediss")
        auth, _, location = rest.rpartition("@")
        hosts, _, path = location.partition("/")
        path = path.strip("/")
        if path and (cluster or not path.isdigit()):
            raise StoreError(f"REDIS_URL database must be a number (redis://host:port/0; a cluster has only "
                             f"database 0), got '/{path}'")
        nodes = []
        for node in hosts.split(","):
            host, _, port = node.strip().rpartition(":") if ":" in node else (node.strip(), "", "6379")
            if not port.isdigit() or not host.strip("[]"):
                raise StoreError(f"REDIS_URL node {node!r} must be host:port "
                                 f"(e.g. redis+cluster://10.0.0.1:7000,10.0.0.2:7000)")
            nodes.append((host.strip("[]"), int(port)))
        if len(nodes) > 1 and not cluster:
            raise StoreError("REDIS_URL names several nodes: a cluster's URL starts with redis+cluster://")
        user, _, password = auth.partition(":")
        return cls(tuple(nodes), cluster, int(path or 0), unquote(user) if user and password else None,
                   unquote(password or user) if auth else None, tls)

    def __str__(self) -> str:  # no credentials in logs or /readyz
        scheme = ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"{scheme}://{hosts}" + ("" if self.cluster else f"/{self.db}")


def _staging(key: str) -> str:
    """A temporary key in `key`'s cluster slot: the hash tag of `key`, or `key` itself as the tag."""
    a = key.find("{")
    tagged = a >= 0 and key.find("}", a + 2) > a
    return f"{key if tagged else '{' + key + '}'}:staging:{uuid.uuid4().hex}"


def _slot_runs(keys: Sequence[str]) -> list[int]:
    """Where the cluster slot changes along `keys`: [0, ..., len(keys)], runs of one slot between."""
    slots = hash_slots(keys)
    return [0, *(np.flatnonzero(slots[1:] != slots[:-1]) + 1).tolist(), len(keys)]


def _decode(raw: list[bytes | None]) -> list[Record | None]:
    """MGET's values as records: one orjson parse of them all (C speed), not one per value."""
    if not raw:
        return []
    try:
        out = orjson.loads(b"[" + b",".join([b"null" if v is None else v for v in raw]) + b"]")
    except orjson.JSONDecodeError:
        out = None
    if not isinstance(out, list) or len(out) != len(raw):
        raise StoreError("a store key holds a value that is not a recsys record (fix: keep other data out of "
                         "the key prefix, or re-run recsys materialize)")
    return out


class RedisStore:
    """`OnlineStore` on one Redis server or a Redis Cluster (see the module docstring)."""

    def __init__(self, url: str, timeout_s: float = 0.2, write_timeout_s: float = 60.0,
                 connect_timeout_s: float = 2.0, replace_after_s: float = 1.0) -> None:
        self.target = Target.parse(url)
        self.name = str(self.target)
        # glide's own log: errors only (its per-request warnings during a failover would flood the
        # service log, which reports degraded answers itself); an application's earlier setting wins
        glide.Logger.init(glide.LogLevel.ERROR)
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.replace_after_s = replace_after_s
        self._clients: dict[Role, Client] = {}
        # One server: the request path's reads through redis-py's pool (see `_read_one_server`).
        self._fast_reads = None if self.target.cluster else redis_py.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=connect_timeout_s, client_name="recsys-read")
        self._connecting: dict[Role, asyncio.Task[Client]] = {}
        self._failing_since: dict[Role, float] = {}

    # ------------------------------------------------------------------ clients
    async def _create(self, role: Role) -> Client:
        t = self.target
        timeout_ms = int((self.timeout_s if role == "read" else self.write_timeout_s) * 1000)
        common: dict[str, Any] = dict(
            addresses=[NodeAddress(h, p) for h, p in t.nodes], use_tls=t.tls,
            credentials=ServerCredentials(t.password, t.username) if t.password is not None else None,
            request_timeout=max(timeout_ms, 1), client_name=f"recsys-{role}",
            reconnect_strategy=BackoffStrategy(num_of_retries=8, factor=10, exponent_base=2))
        connect_ms = int(self.connect_timeout_s * 1000)
        try:
            client: Client
            if t.cluster:
                client = await GlideClusterClient.create(GlideClusterClientConfiguration(
                    **common, advanced_config=AdvancedGlideClusterClientConfiguration(connection_timeout=connect_ms)))
            else:
                client = await GlideClient.create(GlideClientConfiguration(
                    **common, database_id=t.db or None,
                    advanced_config=AdvancedGlideClientConfiguration(connection_timeout=connect_ms)))
            if role == "write":
                await self._load_library(client)
        except glide.GlideError as err:
            raise StoreError(f"cannot connect to redis at {self.name}: {err} "
                             f"(fix: start Redis or point REDIS_URL at it)") from None
        return client

    async def _load_library(self, client: Client) -> None:
        await client.function_load(LIBRARY, replace=True)

    async def _client(self, role: Role) -> Client:
        found = self._clients.get(role)
        if found is not None:
            return found
        task = self._connecting.get(role)
        if task is None:  # one connection attempt at a time, finished even when its caller gives up
            task = self._connecting[role] = asyncio.ensure_future(self._create(role))
        try:
            client = await asyncio.shield(task)
        finally:
            if task.done():
                self._connecting.pop(role, None)
        self._clients[role] = client
        return client

    def _failed(self, role: Role, closed: bool) -> None:
        now = time.monotonic()
        since = self._failing_since.setdefault(role, now)
        if closed or now - since >= self.replace_after_s:
            client = self._clients.pop(role, None)
            self._failing_since.pop(role, None)
            if client is not None:
                asyncio.ensure_future(client.close())

    async def _call(self, role: Role, what: str, fn: Callable[[Client], Awaitable[T]]) -> T:
        timeout_s = self.timeout_s if role == "read" else self.write_timeout_s
        client = self._clients.get(role)
        if client is None:  # (connected: no deadline to arm; it costs a timer per request)
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    client = await self._client(role)
            except TimeoutError:
                raise StoreError(f"cannot connect to redis at {self.name} within {self.connect_timeout_s:.1f} s "
                                 f"(fix: start Redis or point REDIS_URL at it)") from None
        try:
            async with asyncio.timeout(timeout_s):
                out = await fn(client)
        except (TimeoutError, glide.TimeoutError):
            self._failed(role, closed=False)
            raise StoreError(f"redis at {self.name} did not answer {what} within {timeout_s * 1000:.0f} ms "
                             f"(fix: check the server's load, or raise RECSYS_REDIS_TIMEOUT_MS)") from None
        except glide.GlideError as err:
            self._failed(role, closed=isinstance(err, glide.ClosingError))
            raise StoreError(f"redis at {self.name} failed during {what}: {err}") from None
        self._failing_since.pop(role, None)
        return out

    def _batch(self, atomic: bool = False) -> Batch | ClusterBatch:
        return ClusterBatch(is_atomic=atomic) if self.target.cluster else Batch(is_atomic=atomic)

    async def _exec(self, role: Role, what: str, batch: Batch | ClusterBatch) -> list[Any]:
        async def run(client: Client) -> list[Any]:
            out = await client.exec(batch, raise_on_error=True)
            return list(out or [])
        return await self._call(role, what, run)

    async def _fcall_retry(self, what: str, build: Callable[[], Batch | ClusterBatch]) -> list[Any]:
        """A batch of FCALLs, once more after the library was reloaded into a node that lacked it."""
        try:
            return await self._exec("write", what, build())
        except StoreError as err:
            if "function" not in str(err).lower():
                raise
        # a restarted or new node without the library (FCALL: "Function not found"): load it, retry
        await self._call("write", "FUNCTION LOAD", self._load_library)
        return await self._exec("write", what, build())

    # ------------------------------------------------------------------ protocol
    async def read(self, keys: Sequence[str]) -> list[Record | None]:
        if not keys:
            return []
        if self._fast_reads is not None:
            return _decode(await self._read_one_server(keys))
        raw = await self._call("read", "a read", lambda c: c.mget(list(keys)))
        return _decode(raw)

    async def _read_one_server(self, keys: Sequence[str]) -> list[bytes | None]:
        """The request path's MGET on ONE server, through redis-py (hiredis): it runs on the event
        loop, where glide hands each call to its own I/O thread and back, ~0.1 ms of a ranking
        request's ~2.5 (benchmarks/README.md, the store A/B). A cluster's reads stay with glide,
        which groups an MGET per node (redis-py sends one command per slot: 2-5× slower).

        The command is packed by hiredis in one C call and sent on a pooled connection, instead of
        `Redis.mget`, whose per-argument encoding in Python and per-call bookkeeping took 0.33 of
        the 201-key read's 0.36 ms (0.19 ms this way, same run). The connection's own read and
        write drop it on any error or cancellation (a budget that ran out mid-read), so a pooled
        connection never holds a stale reply; a dropped one (e.g. after a server restart) is
        reconnected and the read sent once more, as redis-py's own retry would."""
        command = hiredis.pack_command(("MGET", *keys))  # type: ignore[arg-type]  # its stub types a 1-tuple
        try:
            try:
                return await self._send_read(command)
            except (redis_py.ConnectionError, OSError):  # a dropped connection: once more, on a new one
                return await self._send_read(command)
        except redis_py.TimeoutError:
            raise StoreError(f"redis at {self.name} did not answer a read within {self.timeout_s * 1000:.0f} ms "
                             f"(fix: check the server's load, or raise RECSYS_REDIS_TIMEOUT_MS)") from None
        except (redis_py.RedisError, OSError) as err:
            raise StoreError(f"redis at {self.name} failed during a read: {err}") from None

    async def _send_read(self, command: bytes) -> list[bytes | None]:
        assert self._fast_reads is not None
        pool = self._fast_reads.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(command, check_health=False)
            raw: list[bytes | None] = await conn.read_response()  # bytes (no decode_responses)
            return raw
        finally:
            await pool.release(conn)

    async def write(self, keys: Sequence[str], attributes: Sequence[Mapping[str, str]],
                    counters: Sequence[Mapping[str, int]], keep_counters: bool = False,
                    ttl_s: int | None = None) -> int:
        return await self.write_json(keys, list(map(orjson.dumps, attributes)), list(map(orjson.dumps, counters)),
                                     keep_counters, ttl_s)

    async def write_json(self, keys: Sequence[str], attributes: Sequence[bytes], counters: Sequence[bytes],
                         keep_counters: bool = False, ttl_s: int | None = None) -> int:
        if not (len(keys) == len(attributes) == len(counters)):
            raise ValueError(f"{len(keys)} keys, {len(attributes)} attribute and {len(counters)} counter records")
        if not keys:
            return 0
        what = f"a write of {len(keys)} records"
        values = [_RECORD % pair for pair in zip(attributes, counters, strict=True)]
        if keep_counters:
            # One FCALL per slot (a Redis Function call touches one slot on a cluster; one call in
            # all on one server), records of one slot next to each other (materialize orders them so).
            ttl = str(ttl_s or 0)
            sizes = [b"%d:%d," % (len(v), len(a) + _BEFORE_COUNTERS) for v, a in zip(values, attributes, strict=True)]
            cuts = _slot_runs(keys) if self.target.cluster else [0, len(keys)]

            def fcalls() -> Batch | ClusterBatch:
                batch = self._batch()
                for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                    batch.fcall(PUT, list(keys[a:b]), [ttl, b"".join(sizes[a:b]), b"".join(values[a:b])])
                return batch

            await self._fcall_retry(what, fcalls)
            return len(keys)
        empty = [v == _EMPTY_RECORD for v in values]
        if ttl_s is None and not any(empty):
            # the bulk path: one MSET (split per slot by the cluster client), no command per record
            await self._call("write", what, lambda c: c.mset(dict(zip(keys, values, strict=True))))
            return len(keys)
        batch = self._batch()
        expiry = ExpirySet(ExpiryType.SEC, ttl_s) if ttl_s is not None else None
        for key, value, gone in zip(keys, values, empty, strict=True):
            if gone:
                batch.delete([key])
            else:
                batch.set(key, value, expiry=expiry)
        await self._exec("write", what, batch)
        return len(keys)

    async def increment(self, keys: Sequence[str], amounts: Sequence[Mapping[str, int]],
                        expired_before: Mapping[str, int] | None = None, ttl_s: int | None = None) -> None:
        if len(keys) != len(amounts):
            raise ValueError(f"{len(keys)} keys but {len(amounts)} amounts")
        if not keys:
            return
        live, ttl = orjson.dumps(dict(expired_before or {})), str(ttl_s or 0)
        args = [orjson.dumps({f: int(n) for f, n in a.items()}) for a in amounts]

        def build() -> Batch | ClusterBatch:
            batch = self._batch()
            for key, arg in zip(keys, args, strict=True):
                batch.fcall(ADD, [key], [arg, live, ttl])
            return batch

        await self._fcall_retry(f"counter increments of {len(keys)} records", build)

    async def claim(self, keys: Sequence[str], ttl_s: int) -> list[bool]:
        if not keys:
            return []
        batch = self._batch()
        expiry = ExpirySet(ExpiryType.SEC, ttl_s)
        for key in keys:
            batch.set(key, "1", conditional_set=ConditionalChange.ONLY_IF_DOES_NOT_EXIST, expiry=expiry)
        return [r is not None for r in await self._exec("write", f"claims of {len(keys)} keys", batch)]

    async def write_ranking(self, key: str, members: Sequence[str], scores: Sequence[float],
                            ttl_s: int | None = None) -> None:
        values = finite_scores(members, scores)
        # Built under a temporary key of the same slot in chunks (a huge catalogue never blocks
        # Redis in one command), then swapped in by RENAME, which readers see whole.
        staging = _staging(key)
        for a in range(0, len(members), _ZADD_CHUNK):
            batch = self._batch(atomic=True)
            batch.zadd(staging, dict(zip(members[a:a + _ZADD_CHUNK], values[a:a + _ZADD_CHUNK], strict=True)))
            batch.expire(staging, 3600)  # a writer that dies half-way leaves no garbage behind
            await self._exec("write", f"a ranking of {len(members)} members", batch)
        swap = self._batch(atomic=True)
        if members:  # RENAME carries the staging key's expiry over: replace it
            swap.rename(staging, key)
            swap.expire(key, ttl_s) if ttl_s is not None else swap.persist(key)
        else:
            swap.delete([key])
        await self._exec("write", "a ranking swap", swap)

    async def add_to_ranking(self, key: str, members: Sequence[str], amounts: Sequence[float],
                             ttl_s: int | None = None) -> None:
        values = finite_scores(members, amounts)
        if not members:
            return
        batch = self._batch(atomic=True)
        for member, amount in zip(members, values, strict=True):
            batch.zincrby(key, amount, member)
        if ttl_s is not None:
            batch.expire(key, ttl_s)
        await self._exec("write", "ranking increments", batch)

    async def top(self, key: str, n: int) -> list[str]:
        if n <= 0:
            return []
        members = await self._call("read", "a ranking read",
                                   lambda c: c.zrange(key, RangeByIndex(0, n - 1), reverse=True))
        return [m.decode() for m in members]

    async def ping(self) -> None:
        await self._call("read", "PING", lambda c: c.ping())

    async def close(self) -> None:
        if self._fast_reads is not None:
            await self._fast_reads.aclose()
        for task in self._connecting.values():
            task.cancel()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
