"""Distributed set-up: under `torchrun --nproc_per_node=N` each process is one rank (nccl on CUDA, gloo on CPU);
without it, one process is rank 0 of 1 and nothing here does anything."""
from __future__ import annotations

import os

import torch


def setup() -> tuple[int, int]:
    """(rank, world) under torchrun, initialising the process group once; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist  # only under torchrun

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def device(requested: str | None, world: int) -> torch.device:
    """The requested device, else CUDA when present; under torchrun each rank its own GPU (LOCAL_RANK)."""
    dev = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def wrap(module: torch.nn.Module, dev: torch.device, world: int) -> torch.nn.Module:
    """DDP around the training step when there is more than one rank (unused parameters allowed: a model's
    switches may leave some out of a batch's loss)."""
    if world <= 1:
        return module
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                     find_unused_parameters=True)


def barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()
