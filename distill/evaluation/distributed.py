"""The few torch.distributed calls the evaluators need; a no-op outside an initialised process group."""

from __future__ import annotations

import sys
from typing import Any


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised (torch is not imported for this)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def gather_to_main(obj: Any) -> list | None:
    """Every rank's `obj` on rank 0 (in rank order), None elsewhere."""
    import torch.distributed as dist

    rank, size = world()
    out = [None] * size if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
