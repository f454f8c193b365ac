"""Real redis-server processes that tests can stop, pause, slow down and restart empty."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from recsys.artifact import load_artifact
from recsys.store.keys import KeySpace
from recsys.store.materialize import materialize
from recsys.store.redis import RedisStore

__all__ = ["RedisProcess", "fill"]


class RedisProcess:
    """A private redis-server on `port` without persistence: a restart comes back empty."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             "--enable-debug-command", "local"],  # DEBUG SLEEP: a slow store on demand
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def restart_empty(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:  # SIGSTOP: connections stay open, nothing answers
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def sleep(self, seconds: float) -> socket.socket:
        """DEBUG SLEEP: Redis blocks from now (the reply is not awaited); close the returned socket after."""
        conn = socket.create_connection(("127.0.0.1", self.port))
        conn.sendall(f"DEBUG SLEEP {seconds}\r\n".encode())
        time.sleep(0.02)
        return conn

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(timeout=10)


async def fill(url: str, artifact_dir: Path, raw: Path, prefix: str = "rec") -> None:
    """`recsys materialize` of the artifact's features into Redis."""
    artifact = load_artifact(artifact_dir)
    store = RedisStore(url)
    await materialize(artifact.pipeline.spec, raw, store, KeySpace(prefix, artifact.feature_version),
                      log=lambda _: None)
    await store.close()
