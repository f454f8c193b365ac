"""Ranking latency with and without concurrent event load (issue 10, item 3 and its bar).

A live uvicorn (1 worker, 1 torch thread) on a private Redis:

  alone        POST /v1/recommendations at a fixed arrival rate (--rate, 200 candidates each)
  with events  the same, plus --event-clients clients posting /v1/events of --events-per-post
               events back to back (the issue: 20 concurrent posts of 50 events); a post answered
               429 is retried after its Retry-After, as a well-behaved client does (nothing is lost)

The event clients run in their own process, as event producers do in production: sharing the
ranking timer's event loop, their client-side work (and their wake-ups after a 429's Retry-After)
delayed the timer's own requests by up to ~250 ms that the service never saw (its handler times
stayed under 30 ms), and the bench measured itself.

The two phases alternate (--rounds times each), so a drift of the shared host's speed hits both.
Per phase: ranking p50/p99, answers that were not 200, answers served in degraded mode (the store
read missed RECSYS_STORE_BUDGET_MS, docs/service.md), the events applied per second and the 429s.
The bar: ranking p99 with events within 2x of p99 alone, with no failed and (ideally) no degraded
answers. With --ab two services run side by side on the same Redis, their phases alternating:
"unbounded" (RECSYS_EVENTS_MAX_INFLIGHT=1000000, RECSYS_EVENTS_LOOP_SHARE=1: every post admitted,
no pause, one batch applied at a time: the behaviour before admission control) and "admission"
(the service's defaults); --configs adds others (share-0.1 ...: RECSYS_EVENTS_LOOP_SHARE).

    python benchmarks/fault_bench.py --out /work/bench-data/service        # builds the bench data there
    python benchmarks/fault_bench.py --model DIR --raw DIR --seconds 20 --rounds 3

Prints a table and one JSON line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving_bench import Workload, build_bench_artifact, free_port, pct, start_redis  # noqa: E402

from recsys.artifact import load_artifact  # noqa: E402
from recsys.online import Ranker  # noqa: E402
from recsys.store.materialize import materialize  # noqa: E402
from recsys.store.redis import RedisStore  # noqa: E402

TOKEN = "fault-bench-admin-token"


@dataclass
class Phase:
    name: str
    rank_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    degraded: int = 0
    events: int = 0
    event_s: list[float] = field(default_factory=list)
    event_errors: int = 0
    refused: int = 0  # 429s (each retried after Retry-After)
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        lat = pct(self.rank_s) if self.rank_s else {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0}
        return {"phase": self.name, "rank_p50_ms": lat["p50_ms"], "rank_p99_ms": lat["p99_ms"], "requests": lat["n"],
                "not_200": sum(s != 200 for s in self.statuses), "degraded": self.degraded,
                "events_per_s": round(self.events / self.seconds, 1) if self.seconds else 0.0,
                "event_p50_ms": round(float(np.median(self.event_s)) * 1e3, 1) if self.event_s else None,
                "event_errors": self.event_errors, "refused_429": self.refused}


async def rank_phase(url: str, work: Workload, phase: Phase, seconds: float, rate: float) -> None:
    """POST /v1/recommendations at fixed arrivals for `seconds` (a slow answer does not slow the next)."""
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=64)) as client:

        async def rank_one() -> None:
            user, cands, ctx = work.request(200)
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/recommendations", json={"user_id": user, "candidates": cands,
                                                                   "context": ctx, "k": 10})
                status, degraded = r.status_code, r.status_code == 200 and r.json()["degraded"] is not None
            except httpx.HTTPError:
                status, degraded = 0, False
            phase.rank_s.append(time.perf_counter() - t0)
            phase.statuses.append(status)
            phase.degraded += degraded

        t0 = time.perf_counter()
        ranks, i = [], 0
        while (due := t0 + i / rate) < t0 + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            ranks.append(asyncio.create_task(rank_one()))
            i += 1
        await asyncio.gather(*ranks)
        phase.seconds = time.perf_counter() - t0


async def post_phase(url: str, work: Workload, phase: Phase, seconds: float, clients: int, per_post: int) -> None:
    """`clients` posters of /v1/events, back to back; a 429 is retried after its Retry-After."""
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def post_events() -> None:
            auth = {"authorization": f"Bearer {TOKEN}"}
            while time.perf_counter() < stop:
                events = []
                for _ in range(per_post):
                    user, (item,), ctx = work.request(1)
                    events.append({"event_id": uuid.uuid4().hex, "user_id": user, "item_id": item,
                                   "label": int(work.rng.random() < 0.3), "context": ctx})
                t0 = time.perf_counter()
                while True:  # the same batch until it is applied (or the phase ends)
                    try:
                        r = await client.post("/v1/events", json={"events": events}, headers=auth)
                        status = r.status_code
                    except httpx.HTTPError:
                        status = 0
                    if status != 429:
                        break
                    phase.refused += 1
                    wait = float(r.headers.get("retry-after", "1"))
                    if time.perf_counter() + wait >= stop:
                        break
                    await asyncio.sleep(wait)
                phase.event_s.append(time.perf_counter() - t0)
                phase.events += r.json()["applied"] if status == 200 else 0
                phase.event_errors += status not in (200, 429)

        t0 = time.perf_counter()
        await asyncio.gather(*(post_events() for _ in range(clients)))
        phase.seconds = time.perf_counter() - t0


def _posters(url: str, model: str, raw: str, seconds: float, clients: int, per_post: int,
             conn: Connection) -> None:
    """The event clients' own process (as in production: other machines post events), so that their
    client-side work never delays the ranking timer's loop. Reports its counts as JSON."""
    work = Workload(Path(raw), load_artifact(model).pipeline.spec, seed=1)
    conn.send_bytes(b"ready")
    conn.recv_bytes()  # go
    phase = Phase("events")
    asyncio.run(post_phase(url, work, phase, seconds, clients, per_post))
    conn.send_bytes(json.dumps({k: getattr(phase, k) for k in ("events", "event_s", "event_errors",
                                                                 "refused", "seconds")}).encode())


async def run_phase(url: str, work: Workload, phase: Phase, seconds: float, rate: float, event_clients: int,
                    per_post: int, model: Path, raw: Path) -> None:
    """Ranking at `rate` for `seconds`; with `event_clients`, event posters in a second process at
    the same time (started and ready before the phase's clock starts)."""
    if not event_clients:
        await rank_phase(url, work, phase, seconds, rate)
        return
    ours, theirs = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_posters, args=(url, str(model), str(raw), seconds,
                                                                  event_clients, per_post, theirs))
    proc.start()
    try:
        await asyncio.to_thread(ours.recv_bytes)  # ready
        ours.send_bytes(b"go")
        await rank_phase(url, work, phase, seconds, rate)
        counts = json.loads(await asyncio.to_thread(ours.recv_bytes))
    finally:
        proc.join(timeout=seconds + 60)
        if proc.is_alive():
            proc.kill()
    phase.events, phase.event_s = counts["events"], counts["event_s"]
    phase.event_errors, phase.refused = counts["event_errors"], counts["refused"]


CONFIGS = {"unbounded": {"RECSYS_EVENTS_MAX_INFLIGHT": "1000000", "RECSYS_EVENTS_LOOP_SHARE": "1"},
           "admission": {},
           **{f"share-{x}": {"RECSYS_EVENTS_LOOP_SHARE": x} for x in ("0.1", "0.2", "0.3")}}


def start_service(model: Path, redis_url: str, log: Path, budget_ms: float | None,
                  extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "RECSYS_MODEL_DIR": str(model), "REDIS_URL": redis_url, "RECSYS_KEY_PREFIX": "bench",
           "RECSYS_TORCH_THREADS": "1", "RECSYS_ADMIN_TOKEN": TOKEN,
           **({"RECSYS_STORE_BUDGET_MS": str(budget_ms)} if budget_ms else {}), **extra}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--host",
                             "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"uvicorn did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def summary(config: str, phases: list[Phase]) -> dict[str, Any]:
    pooled = {name: [s for p in phases if p.name.startswith(name) for s in p.rank_s] for name in ("alone", "with")}
    p99 = {name: pct(xs)["p99_ms"] for name, xs in pooled.items()}
    with_events = [p for p in phases if p.name.startswith("with")]
    return {
        "config": config, "env": CONFIGS[config] or "defaults",
        "phases": [p.row() for p in phases],
        "rank_p99_ms_alone": p99["alone"], "rank_p99_ms_with_events": p99["with"],
        "p99_ratio": round(p99["with"] / p99["alone"], 2),
        "within_2x": p99["with"] <= 2 * p99["alone"],
        "failed_with_events": sum(p.row()["not_200"] for p in with_events),
        "degraded_with_events": sum(p.degraded for p in with_events),
        "requests_with_events": sum(len(p.rank_s) for p in with_events),
        "events_per_s": round(sum(p.events for p in with_events) / sum(p.seconds for p in with_events), 1),
        "refused_429": sum(p.refused for p in with_events),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    model, raw = (Path(args.model), Path(args.raw)) if args.model else build_bench_artifact(Path(args.out))
    artifact = load_artifact(model)
    work = Workload(raw, artifact.pipeline.spec)
    redis_proc, redis_url, workdir = start_redis()
    logs = Path(tempfile.mkdtemp(prefix="fault-bench-"))
    configs = ("unbounded", "admission") if args.ab else tuple(args.configs.split(","))
    services: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    phases: dict[str, list[Phase]] = {c: [] for c in configs}
    try:
        store = RedisStore(redis_url, timeout_s=5.0)
        await materialize(artifact.pipeline.spec, raw, store, Ranker(artifact, prefix="bench").keys,
                          log=lambda _: None)
        await store.close()
        # Both services run side by side (the idle one costs nothing); their phases alternate, so a
        # drift of the shared host's speed hits both configurations alike.
        for config in configs:
            services[config] = start_service(model, redis_url, logs / f"{config}.log", args.budget_ms,
                                             CONFIGS[config])
        for config in configs:
            await run_phase(services[config][1], work, Phase("warm-up"), 3.0, args.rate, 0, args.events_per_post,
                            model, raw)
        for r in range(args.rounds):
            for config in configs:
                for name, clients in (("alone", 0), ("with events", args.event_clients)):
                    phase = Phase(f"{name} #{r + 1}")
                    await run_phase(services[config][1], work, phase, args.seconds, args.rate, clients,
                                    args.events_per_post, model, raw)
                    phases[config].append(phase)
    finally:
        for proc, _ in services.values():
            proc.terminate()
            proc.wait(timeout=10)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "runs": [summary(c, phases[c]) for c in configs],
        "settings": {"rate_per_s": args.rate, "candidates": 200, "event_clients": args.event_clients,
                     "events_per_post": args.events_per_post, "seconds_per_phase": args.seconds,
                     "rounds": args.rounds, "store_budget_ms": args.budget_ms or 30.0},
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "date": date.today().isoformat(),
                    "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="artifact folder (default: build one under --out)")
    p.add_argument("--raw", help="raw tables of --model")
    p.add_argument("--out", default=str(REPO / "runs" / "bench"), help="where the bench dataset/artifact goes")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    p.add_argument("--rounds", type=int, default=2, help="alone / with-events pairs")
    p.add_argument("--rate", type=float, default=20.0, help="ranking requests per second")
    p.add_argument("--event-clients", type=int, default=20)
    p.add_argument("--events-per-post", type=int, default=50)
    p.add_argument("--budget-ms", type=float, help="RECSYS_STORE_BUDGET_MS for the service (default: its own)")
    p.add_argument("--ab", action="store_true", help="= --configs unbounded,admission")
    p.add_argument("--configs", default="admission", help=f"comma-separated, of {', '.join(CONFIGS)}")
    args = p.parse_args()
    if bool(args.model) != bool(args.raw):
        p.error("--model and --raw go together")
    if unknown := set(args.configs.split(",")) - set(CONFIGS):
        p.error(f"--configs: unknown {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    res = asyncio.run(main_async(args))
    cols = ["phase", "rank_p50_ms", "rank_p99_ms", "requests", "not_200", "degraded", "events_per_s", "event_p50_ms",
            "event_errors", "refused_429"]
    for run in res["runs"]:
        print(f"== {run['config']} ({run['env']})")
        print("  ".join(f"{c:>12}" for c in cols))
        for row in run["phases"]:
            print("  ".join(f"{row[c]!s:>12}" for c in cols))
        print(f"ranking p99: {run['rank_p99_ms_alone']} ms alone, {run['rank_p99_ms_with_events']} ms with events "
              f"({run['p99_ratio']}x; bar <= 2x: {'met' if run['within_2x'] else 'missed'}); with events "
              f"{run['failed_with_events']} failed and {run['degraded_with_events']} degraded of "
              f"{run['requests_with_events']}; {run['events_per_s']} events/s applied, {run['refused_429']} posts "
              f"answered 429")
    m = res["machine"]
    print(f"{m['cpu']}, {m['cpus']} CPUs, {m['date']}, load average at end {m['loadavg_1m_at_end']}")
    print(json.dumps({"benchmark": "fault", **res}, ensure_ascii=False))

if __name__ == "__main__":
    main()
