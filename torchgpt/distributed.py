"""Data-parallel training through torch.distributed, launched by ``torchrun`` (no home-made launcher).

``torchrun --nproc_per_node N -m parity.cli train --impl torch ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; ``setup()`` sees them, joins the process group (nccl on CUDA, gloo on CPU) and
returns this process's place. Each rank trains on its shard of every global batch; DDP averages
the gradients, so the update equals one process on the whole batch.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # by torchrun: the DDP path runs, with one process too

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.launched

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if dist.is_initialized() else None


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def setup(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; a single process otherwise."""
    if not launched_by_torchrun():
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), True)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
