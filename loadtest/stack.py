"""Start, drive and stop the pieces of a load test: shared by the gate and the capacity report.

Everything runs as child processes through the same commands a user types (`recsys generate`,
`build-features`, `train`, `materialize`, `serve`, `locust`), so the gate measures the path users
deploy. `Stack` owns what it started and stops it in reverse order when the `with` block ends,
also on an error or Ctrl-C (SIGTERM is turned into the same unwinding). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import FrameType
from typing import IO, Callable, Iterator, ParamSpec, Sequence

__all__ = ["REPO", "PREFIX", "SetupError", "Stack", "Summary", "build_model", "exit_codes", "free_port", "prioritize",
           "recsys_cmd", "run_locust", "sigterm_unwinds"]

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
PREFIX = "loadtest"  # store key prefix: never collides with a demo's keys (`rec`) in a shared Redis


class SetupError(RuntimeError):
    """A step before the load (data, model, Redis, service) failed: the message says which and where
    its log is; the scripts print it as one line and exit 2."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def recsys_cmd() -> list[str]:
    """The `recsys` console script of this interpreter; `python -m pipelines.cli` if it is missing."""
    script = Path(sys.executable).parent / "recsys"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipelines.cli"]


def _run_step(args: Sequence[str], log: Path) -> None:
    print(f"$ {' '.join(['recsys', *args])}", flush=True)
    with log.open("ab") as out:
        rc = subprocess.call([*recsys_cmd(), *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise SetupError(f"`recsys {args[0]}` exited {rc}: {tail[0]} (full log: {log})")


def build_model(out: Path, users: int, items: int, impressions: int, epochs: int) -> tuple[Path, Path]:
    """generate → build-features → train into `out` (replaced): a small model with the synthetic spec's
    full architecture, so the forward pass costs what the demo model's does. Returns (model, raw)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    raw, feats, model, log = out / "raw", out / "features", out / "model", out / "build.log"
    _run_step(["generate", "--out", str(raw), "--users", str(users), "--items", str(items),
               "--impressions", str(impressions), "--days", "14"], log)
    _run_step(["build-features", "--spec", "synthetic", "--raw", str(raw), "--out", str(feats), "--quiet"], log)
    _run_step(["train", "--features", str(feats), "--out", str(model), "--epochs", str(epochs), "--quiet"], log)
    return model, raw


def _wait(what: str, proc: subprocess.Popen[bytes], probe: Callable[[], bool], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if proc.poll() is not None:
            raise SetupError(f"{what} exited with {proc.returncode} before it was ready (log: {log})")
        if time.monotonic() > deadline:
            raise SetupError(f"{what} was not ready after {timeout_s:.0f}s (log: {log})")
        time.sleep(0.2)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def prioritize(pid: int, nice: int) -> None:
    """Niceness for a process and, where the kernel groups CPU shares by session (autogroup: then a
    plain nice only counts inside the session), for its session too. Negative values need root."""
    os.setpriority(os.PRIO_PROCESS, pid, nice)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


class Stack(contextlib.AbstractContextManager["Stack"]):
    """The processes of one load test; stopped (children of uvicorn included) on exit. With `nice`,
    each runs at that priority (see `prioritize`); uvicorn's workers inherit it."""

    def __init__(self, logs: Path, nice: int = 0) -> None:
        self.logs = logs
        self.nice = nice
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        logs.mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, cmd: Sequence[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"{name}.log"
        # Own session: Ctrl-C reaches only this script, which then stops the children in order.
        with log.open("wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(list(cmd), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if self.nice:
            prioritize(proc.pid, self.nice)
        self._procs.append((name, proc))
        return proc, log

    def redis(self) -> str:
        """A private redis-server on a free port (no persistence); its URL."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise SetupError("redis-server is not on PATH (fix: apt-get install -y redis-server, or pass --redis-url)")
        port = free_port()
        workdir = self.logs / "redis"
        workdir.mkdir(exist_ok=True)
        proc, log = self._spawn("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(workdir)])
        _wait("redis-server", proc, lambda: _port_open(port), log, 10)
        return f"redis://127.0.0.1:{port}/0"

    def materialize(self, model: Path, raw: Path, redis_url: str) -> None:
        _run_step(["materialize", "--model", str(model), "--raw", str(raw), "--redis-url", redis_url,
                   "--prefix", PREFIX, "--quiet"], self.logs / "materialize.log")

    def service(self, model: Path, redis_url: str, workers: int, threads: int, timeout_s: float = 120) -> str:
        """`recsys serve` on a free port of 127.0.0.1, waited for until /readyz says ready; its URL."""
        port = free_port()
        args = ["serve", "--model", str(model), "--redis-url", redis_url, "--prefix", PREFIX, "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers), "--threads", str(threads)]
        print(f"$ recsys {' '.join(args)}", flush=True)
        proc, log = self._spawn(f"service-{port}", [*recsys_cmd(), *args])
        url = f"http://127.0.0.1:{port}"
        _wait("the service", proc, lambda: _http_ok(f"{url}/readyz"), log, timeout_s)
        return url

    def cpu_seconds(self, name_prefix: str) -> float:
        """CPU time used so far by the started processes named `name_prefix`* and every process in
        their groups (uvicorn's workers): CPU per request is what a noisy neighbour changes least."""
        groups = {proc.pid for name, proc in self._procs if name.startswith(name_prefix)}
        ticks = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:  # exited meanwhile
                continue
            f = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ... utime stime
            if int(f[2]) in groups:
                ticks += int(f[11]) + int(f[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self, name_prefix: str = "") -> None:
        """Stop the started processes whose name starts with `name_prefix`, newest first: SIGTERM to
        the process group (uvicorn's workers too), SIGKILL after 15 s."""
        keep = []
        for name, proc in reversed(self._procs):
            if not name.startswith(name_prefix):
                keep.append((name, proc))
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs = list(reversed(keep))

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (CI timeouts, `kill`) unwinds like Ctrl-C, so `with Stack()` stops what it started."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


P = ParamSpec("P")


def exit_codes(tool: str) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """A load tool's `main` with the shared exit codes: 2 and one line when a set-up step failed, 130
    when interrupted (Ctrl-C, or SIGTERM under `sigterm_unwinds`), after `Stack` stopped everything."""
    def wrap(main: Callable[P, int]) -> Callable[P, int]:
        def run(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except SetupError as err:
                print(f"{tool}: error: {err}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{tool}: interrupted; everything it started was stopped", file=sys.stderr)
                return 130
        return run
    return wrap


@dataclass(frozen=True)
class Summary:
    """The final numbers of a Locust run, as its quitting listener judged them (whole ms)."""

    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    generator_cpu_ms: float  # Locust's own CPU per request: its share of the machine

    @classmethod
    def read(cls, path: Path) -> "Summary | None":
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def run_locust(url: str, model: Path, raw: Path, users: int, run_time: str, report: Path,
               extra: Sequence[str] = (), spawn_rate: float | None = None, log: IO[str] | None = None,
               timeout_s: float = 600) -> tuple[int, Summary | None]:
    """Headless Locust against `url` (its own process: gevent), stats reset after ramp-up; CSV and
    HTML reports at `report`*. Returns Locust's exit code (1 = budget missed) and the summary."""
    if not url.startswith("http://127.0.0.1:"):
        raise SetupError(f"the load test only targets 127.0.0.1, got {url}")
    report.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{report}_summary.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
           "-u", str(users), "-r", str(spawn_rate or users), "-t", run_time, "--reset-stats", "--stop-timeout", "5",
           "--csv", str(report), "--html", f"{report}.html", "--only-summary", "--loglevel", "WARNING",
           "--model", str(model), "--raw", str(raw), "--summary-json", f"{report}_summary.json", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log or None, stderr=subprocess.STDOUT if log else None)
    try:
        rc = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    return rc, Summary.read(Path(f"{report}_summary.json"))
