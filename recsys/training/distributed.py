"""Data-parallel training under torchrun: who am I, wrap the model, agree on numbers.

As in nanoGPT's train.py: torchrun (or `recsys train --nproc N`, which starts torch's elastic
agent) sets RANK / WORLD_SIZE / LOCAL_RANK; one process per rank joins the process group (gloo on
CPU, nccl on GPU), wraps the model in DistributedDataParallel (gradients averaged across ranks in
buckets during the backward pass), and only rank 0 writes checkpoints and the artifact. Without
those variables everything here is a no-op and training runs in one plain process.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Dist", "WorkerFailed", "launch", "launched_by_torchrun", "restarts"]


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def restarts() -> int:
    """How often torchrun's elastic agent has restarted this job's workers (they then resume)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    restarts: int = 0  # how often torchrun's elastic agent restarted this job's workers
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"

    @classmethod
    def from_env(cls, timeout_s: float = 600.0) -> "Dist":
        """Join the process group that torchrun set up (a no-op in a plain process). A rank that
        waits longer than `timeout_s` in a collective fails instead of hanging."""
        if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        d = cls(rank=int(os.environ["RANK"]), world=int(os.environ["WORLD_SIZE"]), local_rank=local_rank,
                local_world=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                restarts=restarts(), device=device)
        # The store torchrun's agent keeps across restarts, seen under a prefix per restart round:
        # without it, ranks restarted by the agent read the dead round's gloo addresses (torch 2.13)
        # and time out connecting to them.
        timeout = timedelta(seconds=timeout_s)
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        # (TCPStore and PrefixStore are public torch.distributed names its type stubs do not re-export.)
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),  # type: ignore[attr-defined]
                              d.world, is_master=d.rank == 0 and not agent_store, timeout=timeout)
        round_store = dist.PrefixStore(f"recsys/round-{d.restarts}", store)  # type: ignore[attr-defined]
        dist.init_process_group(backend=d.backend, store=round_store, rank=d.rank, world_size=d.world, timeout=timeout)
        return d

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP over the model (rank 0's initial weights are broadcast to all ranks)."""
        if not self.active:
            return model
        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None,
                                       gradient_as_bucket_view=True)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks (float64, so loss sums stay exact enough)."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's values on every rank: decisions are made once."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return [float(v) for v in t.cpu()]

    def gather(self, t: torch.Tensor) -> torch.Tensor | None:
        """Rank 0 gets every rank's 1-d tensor concatenated in rank order (lengths may differ);
        the other ranks get None."""
        if not self.active:
            return t
        lengths = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.world)]
        dist.all_gather(lengths, torch.tensor([len(t)], device=self.device))
        longest = int(max(int(n) for n in lengths))
        padded = torch.zeros(longest, dtype=t.dtype, device=self.device)
        padded[:len(t)] = t.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world)] if self.is_main else None
        dist.gather(padded, parts, dst=0)
        if parts is None:
            return None
        return torch.cat([p[:int(n)] for p, n in zip(parts, lengths, strict=True)]).cpu()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


class WorkerFailed(RuntimeError):
    """A training process died or failed; the agent stopped the others."""


def launch(nproc: int, command: Sequence[str], max_restarts: int = 0) -> None:
    """Run `command` as `nproc` ranks on this machine under torch's elastic agent: what
    `torchrun --standalone --nproc-per-node N --max-restarts K` does, in this process. When a rank
    exits non-zero or is killed, the agent stops the others and restarts all of them (up to
    `max_restarts` times; they resume from the newest checkpoint) or raises WorkerFailed naming
    the rank and its exit code or signal."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=max_restarts,
                          monitor_interval=0.1)
    try:
        elastic_launch(config, command[0])(*command[1:])
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        raise WorkerFailed(f"rank {rank} (pid {failure.pid}) {how}; the other ranks were stopped"
                           + (f" after {max_restarts} restart(s)" if max_restarts else "")) from None
