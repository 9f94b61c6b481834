"""One of several processes under torchrun: the process group and the few collectives seqlm needs.

torchrun (or `seqlm ... --nproc N`, which runs it) starts one process per device and sets
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address. `joined()` then opens the process
group (nccl on CUDA, gloo on CPU) with a timeout, so that a rank that dies or hangs makes the
others fail instead of waiting forever. Without those variables a run is a single process,
`SINGLE`, and every collective here is the identity.

Rank 0 is the only writer: logs, metrics, checkpoints, models. What only it decides or does
(taking the run directory's lock, choosing the checkpoint to resume from, writing a
checkpoint) goes through `on_main`, which hands its result, or its error, to every rank.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from seqlm.errors import ConfigError, ExitCode, SeqlmError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600
LAUNCHED_NPROC = "SEQLM_NPROC"  # set by `seqlm ... --nproc N` in the processes it starts  # evaluate has no distributed section; pretrain/finetune: distributed.timeout_s


class PeerFailed(SeqlmError):
    """Rank 0 failed with a message it has shown: this rank exits with its code, silently."""

    reported_by_rank_0 = True

    def __init__(self, message: str, exit_code: ExitCode):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Cluster:
    """This process's place among the run's processes (rank 0 of 1 for a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # Collectives run on this device: cuda for nccl, cpu for gloo.
    collective_device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device_for(self, device: torch.device) -> torch.device:
        """This rank's device: cuda:LOCAL_RANK on CUDA; cpu for `auto` on a Mac (no mps backend for collectives)."""
        if not self.distributed:
            return device
        if device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over all ranks (float64: exact for counts below 2**53)."""
        if not self.distributed:
            return [float(value) for value in values]
        tensor = torch.tensor([float(value) for value in values], dtype=torch.float64, device=self.collective_device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def max(self, value: int) -> int:
        """The largest `value` over all ranks."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.collective_device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return int(tensor.item())

    def gather(self, value: T) -> list[T]:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank."""
        if not self.distributed:
            return value
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0)
        return holder[0]


SINGLE = Cluster()


@contextmanager
def joined(timeout_s: int, device_request: str) -> Iterator[Cluster]:
    """The process group for the run's duration (SINGLE outside torchrun); destroyed on the way out."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield SINGLE
        return
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if device_request == "mps":
        raise ConfigError("a run of several processes needs cuda or cpu (torch.distributed has no mps backend); use --device cpu")
    use_cuda = device_request in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    elif "OMP_NUM_THREADS" not in os.environ:
        # Processes sharing a machine split its cores: more threads than cores only slows all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    yield Cluster(rank, world_size, local_rank, "cuda" if use_cuda else "cpu")
    # A run that ends well: every rank leaves its last collective before any closes its connections.
    # A failed one does not get here: tearing the group down while a peer may still use it can abort
    # the process (gloo), so the CLI ends a failed rank with os._exit once its message is out.
    dist.barrier()
    dist.destroy_process_group()


def on_main(cluster: Cluster, action: Callable[[], T]) -> T:
    """Run `action` on rank 0 only and return its result on every rank.

    An error it raises is raised on rank 0 as it is, and on the other ranks as `PeerFailed`
    with the same exit code, so every process of the run stops the same way, at once."""
    if not cluster.distributed:
        return action()
    outcome: tuple[str, Any, Any] = ("ok", None, None)
    failure: BaseException | None = None
    if cluster.is_main:
        try:
            outcome = ("ok", action(), None)
        except SeqlmError as exc:
            failure, outcome = exc, ("error", int(exc.exit_code), str(exc))
        except BaseException as exc:  # noqa: BLE001 — re-raised below, after the others are told
            failure, outcome = exc, ("error", int(ExitCode.UNEXPECTED), f"{type(exc).__name__}: {exc}")
    outcome = cluster.broadcast(outcome)
    if failure is not None:
        raise failure
    if outcome[0] == "error":
        raise PeerFailed(f"rank 0 failed: {outcome[2]}", ExitCode(outcome[1]))
    return outcome[1]


def sharded_results(
    cluster: Cluster, items: Sequence[T], compute: Callable[[T], Any], lockstep: bool = False
) -> list[Any]:
    """`[compute(item) for item in items]`, each rank computing items rank, rank + W, ...; the results in
    item order on every rank. With `lockstep` (FSDP: every forward pass is a collective) every rank
    makes the same number of calls, a rank with fewer items repeating its first one unused."""
    if not cluster.distributed:
        return [compute(item) for item in items]
    mine = range(cluster.rank, len(items), cluster.world_size)
    local = [(index, compute(items[index])) for index in mine]
    if lockstep and items:
        for _ in range(math.ceil(len(items) / cluster.world_size) - len(local)):
            compute(items[0])
    merged = [pair for part in cluster.gather(local) for pair in part]
    return [result for _, result in sorted(merged, key=lambda pair: pair[0])]
