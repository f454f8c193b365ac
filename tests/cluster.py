"""A real Redis Cluster for tests: 3 masters + 3 replicas from `redis-server --cluster-enabled yes`
on free ports, joined by `redis-cli --cluster create ... --cluster-replicas 1`. No stand-ins."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisCluster"]


def _free_ports(n: int) -> list[int]:
    """n free ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


class RedisCluster:
    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        exe = shutil.which("redis-server")
        if exe is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server / redis-cli are not installed (fix: apt-get install -y redis-server)")
        self.ports = _free_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.ports:
            d = workdir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            self.procs[port] = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", "1000",
                 "--save", "", "--appendonly", "no", "--dir", str(d), "--repl-diskless-sync-delay", "0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            self._wait_port(port)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", str(replicas), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60)
        self.wait_ok()
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:masters])

    @staticmethod
    def _wait_port(port: int) -> None:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {port} did not start")

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                              timeout=10).stdout

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node reports cluster_state:ok (all slots served) and every replica has
        synced with its master (a replica that never synced is not promoted on a failover)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.alive()) and all(
                    "role:master" in info or "master_link_status:up" in info
                    for info in (self.cli(p, "info", "replication") for p in self.alive())):
                return
            time.sleep(0.1)
        raise RuntimeError("the test cluster did not reach cluster_state:ok")

    def masters(self) -> list[int]:
        lines = self.cli(self.alive()[0], "cluster", "nodes").splitlines()
        return sorted(int(line.split()[1].split(":")[1].split("@")[0]) for line in lines
                      if "master" in line.split()[2] and "fail" not in line.split()[2])

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
