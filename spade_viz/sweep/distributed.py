"""A sweep shared between the processes that torchrun or accelerate launch started, on one machine or several.

A launcher tells each process its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT; accelerate's MPI path under MPI's names). `launched_processes` joins
them with torch.distributed: NCCL when the processes run on CUDA, each on its own GPU
(cuda:LOCAL_RANK), gloo otherwise. `run_sweep(processes=...)` then sweeps every size-th batch in
each process, the very batches one process would run, so every number is computed as it would be
alone, and gathers them on rank 0, which alone cross-fits linear SPADE (on every example's states,
gathered with them: the same maps as one process fits), stores the cache entry and returns the result.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import InputError

_LAUNCH_VARS = (  # (world size, rank, local rank) as launchers name them; the ones accelerate reads
    ("WORLD_SIZE", "RANK", "LOCAL_RANK"),  # torchrun, accelerate launch (--multi_gpu, multi-node)
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),  # Intel MPI, MPICH
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK"),  # MVAPICH
)
# A collective waits for the slowest process: its model download or load, its batches. A process
# that fails does not leave the others waiting this long: torchrun stops them all.
_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Processes:
    """This process's place among those sharing a sweep (alone: rank 0 of 1), its device, and the
    collectives `run_sweep` uses."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "auto"

    def all_gather(self, obj) -> list:
        """Every process's `obj`, in rank order, in every process."""
        if self.size == 1:
            return [obj]
        gathered = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered

    def gather(self, obj) -> list | None:
        """Every process's `obj`, in rank order, on rank 0; None in the others."""
        if self.size == 1:
            return [obj]
        gathered = [None] * self.size if self.rank == 0 else None
        dist.gather_object(obj, gathered, dst=0)
        return gathered

    @contextlib.contextmanager
    def machine_first(self) -> Iterator[None]:
        """Run the block in each machine's first process, then in its others: a default model is
        converted, a Hub model downloaded, once per machine and not by several processes at once."""
        if self.size > 1 and self.local_rank != 0:
            dist.barrier()
        yield
        if self.size > 1 and self.local_rank == 0:
            dist.barrier()


def launch_place(environ: Mapping[str, str]) -> tuple[int, int, int] | None:
    """(rank, size, local rank) a launcher gave this process in `environ`, or None when it runs
    alone; InputError for a launch described by halves (no rank, no MASTER_ADDR...)."""
    for size_var, rank_var, local_var in _LAUNCH_VARS:
        if not environ.get(size_var):
            continue
        size = _count(environ, size_var)
        if size <= 1:
            return None
        missing = [var for var in (rank_var, "MASTER_ADDR", "MASTER_PORT") if not environ.get(var)]
        if missing:
            raise InputError(f"{size_var} is {size} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                             "not set: start the processes with torchrun or accelerate launch")
        rank, local = _count(environ, rank_var), _count(environ, local_var)
        if rank >= size:
            raise InputError(f"{rank_var} is {rank} but {size_var} is {size}")
        return rank, size, local
    return None


def _count(environ: Mapping[str, str], var: str) -> int:
    """The whole number a launcher set in `var` (0 when unset), else InputError."""
    text = environ.get(var) or "0"
    if not text.strip().isdigit():
        raise InputError(f"the launcher's {var} is {text!r}, not a whole number")
    return int(text)


def _device_for(device: str, local_rank: int) -> str:
    """The device of the process `local_rank` of its machine: its own GPU where the choice lands on
    CUDA (auto with a GPU, cuda, cuda:N), else the device asked for."""
    if device.strip().lower().partition(":")[0] not in ("auto", "cuda") or not torch.cuda.is_available():
        return device
    if local_rank >= torch.cuda.device_count():
        raise InputError(f"process {local_rank} of this machine has no GPU of its own ({torch.cuda.device_count()} "
                         "visible): start at most one process per GPU, or use `device='cpu'`")
    return f"cuda:{local_rank}"


@contextlib.contextmanager
def launched_processes(device: str = "auto") -> Iterator[Processes]:
    """The processes this one was started among (alone: `Processes(device=device)`), joined for
    the block and let go after it. In processes other than rank 0 the block prints nothing: an
    error still propagates (`cli.main` prints it)."""
    place = launch_place(os.environ)
    if place is None:
        yield Processes(device=device)
        return
    rank, size, local = place
    device = _device_for(device, local)
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.partition(":")[2]))
    dist.init_process_group("nccl" if device.startswith("cuda:") else "gloo", rank=rank, world_size=size,
                            timeout=_TIMEOUT)  # MASTER_ADDR and MASTER_PORT from the environment
    try:
        with contextlib.ExitStack() as quiet:
            if rank != 0:
                sink = quiet.enter_context(open(os.devnull, "w"))
                quiet.enter_context(contextlib.redirect_stdout(sink))
                quiet.enter_context(contextlib.redirect_stderr(sink))
            yield Processes(rank, size, local, device)
    finally:
        dist.destroy_process_group()
