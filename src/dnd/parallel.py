"""Data-parallel generator training through `accelerate` (issue 31): who this process is among
the processes `accelerate launch` (or torchrun, or MPI) started, and the few collectives the
trainer needs.

One code path: without a launcher (WORLD_SIZE unset or 1) `Ranks()` is the single process, every
collective is a no-op and nothing of torch.distributed or accelerate is touched, so the default
run is the single-process run it always was. Under a launcher, `connect(device)` lets accelerate's
`PartialState` read the launcher's environment and open the process group (gloo on the CPU, NCCL
on CUDA, each process on the card of its LOCAL_RANK).

How the trainer stays independent of the process count (dnd.generators.train_generator): the
global batch of step s is the one a single process draws (the same pairs, prompts and noise,
dnd.generators.PairSampler replays the step's random stream on every process); process r keeps
the pairs [r*B/W, (r+1)*B/W) of it by index; its loss is its pairs' share of the global mean
(the local mean times n_r / B), and the gradients are summed over the processes
(`sum_gradients`): the sum of per-pair contributions over B, the single-process gradient up to
float summation order. Every process then clips and steps the same gradient from the same
parameters, so the parameters stay equal on all of them without a broadcast.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

#: Environment variables naming the number of processes: torchrun/accelerate launch, then MPI.
WORLD_ENV = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]
#: Elements per all-reduce of the gradients (64 MiB of float32): no full flat copy of a large model.
BUCKET_ELEMENTS = 1 << 24
#: How long a collective waits for a process that stopped answering before it fails.
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Ranks:
    """This process among `world` data-parallel processes (rank 0 is the main one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """[lo, hi): this process's items of a global batch of n, contiguous by item index."""
        return self.rank * n // self.world, (self.rank + 1) * n // self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def sum_gradients(self, params: Iterable[Any]) -> None:
        """Replace every parameter's gradient by its sum over the processes, in buckets of
        BUCKET_ELEMENTS. A parameter without a gradient keeps none (every process runs the same
        graph, so it has none anywhere, and AdamW skips it as a single process would)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        bucket: list[Any] = []
        size = 0
        for i, grad in enumerate(grads):
            bucket.append(grad)
            size += grad.numel()
            if size >= BUCKET_ELEMENTS or i == len(grads) - 1:
                flat = torch.cat([g.reshape(-1) for g in bucket])
                dist.all_reduce(flat)
                offset = 0
                for g in bucket:
                    g.copy_(flat[offset:offset + g.numel()].view_as(g))
                    offset += g.numel()
                bucket, size = [], 0

    def sum_values(self, values: Sequence[float], device: Any = "cpu") -> list[float]:
        """`values` summed over the processes (float64), the same list on every process; `device`:
        the training device (NCCL reduces CUDA tensors only)."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()


def launch_prefix(gpus: int) -> str:
    """What goes before `python -m dnd.cli ...` in a rule's command (workflow/rules/common.smk
    job_launcher): nothing for a job with at most one GPU (the one-process command, unchanged), and
    for a job holding `gpus` > 1 GPUs of one node, accelerate's launcher starting one process per GPU
    (torchrun underneath; `--no_python` runs the command as written)."""
    if gpus <= 1:
        return ""
    return (f"accelerate launch --multi_gpu --num_processes {int(gpus)} --num_machines 1 --mixed_precision no "
            "--dynamo_backend no --no_python ")


def world_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(WORLD_ENV, 1)


def connect(device: Any) -> tuple[Ranks, Any]:
    """(this process's Ranks, its device). Without a launcher: (Ranks(), device), nothing else
    touched. Under one: accelerate's PartialState opens the process group (gloo when `device` is
    the CPU, NCCL on CUDA) and a CUDA device becomes this process's card (cuda:LOCAL_RANK). The
    torch thread count is kept (accelerate would reset it on the CPU)."""
    import torch

    device = torch.device(device)
    if world_size() <= 1:
        return Ranks(), device
    from accelerate import PartialState
    from accelerate.utils import InitProcessGroupKwargs

    threads = torch.get_num_threads()
    state = PartialState(cpu=device.type == "cpu", **InitProcessGroupKwargs(timeout=TIMEOUT).to_kwargs())
    torch.set_num_threads(threads)
    if state.num_processes <= 1:
        raise RuntimeError(f"{world_size()} processes launched, but accelerate opened no process group on "
                           f"{device.type} (distributed type {state.distributed_type})")
    if device.type != "cpu":
        device = torch.device(state.device)
    log.info("data-parallel process %d of %d on %s (%s)", state.process_index, state.num_processes, device,
             state.backend)
    return Ranks(state.process_index, state.num_processes), device
