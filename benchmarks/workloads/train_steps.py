"""One training step's workload at the OV-COCO recipe's shapes, and its timing, for the step benchmarks
(benchmarks/fvlm_step.py, benchmarks/baron_step.py): the same random batch, the same timed loop."""

from __future__ import annotations

import resource
import time
from typing import Callable

NUM_CLASSES = 48  # OV-COCO's base classes
REGIONS = 300  # ViLD's region-store boxes per image


def random_batch(size: int, batch: int, dim: int, with_regions: bool, seed: int) -> list[dict]:
    """`batch` torchvision-backend records of uint8 (3, size, size) images with 6 ground-truth boxes each, and
    REGIONS region-store boxes with random (dim,) embeddings when `with_regions` (ViLD's targets)."""
    import torch

    from distill.methods import METHOD_TARGETS, RegionTargets

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        xy = torch.rand(6, 2, generator=g) * size * 0.6
        boxes = torch.cat([xy, xy + 16 + torch.rand(6, 2, generator=g) * size * 0.3], 1).clamp(max=size - 1)
        rec = {
            "image": torch.randint(0, 255, (3, size, size), dtype=torch.uint8, generator=g),
            "boxes": boxes,
            "labels": torch.randint(0, NUM_CLASSES, (6,), generator=g),
            "scale": (1.0, 1.0),
            "height": size,
            "width": size,
        }
        if with_regions:
            rxy = torch.rand(REGIONS, 2, generator=g) * size * 0.7
            rboxes = torch.cat([rxy, rxy + 8 + torch.rand(REGIONS, 2, generator=g) * size * 0.3], 1)
            emb = torch.nn.functional.normalize(torch.randn(REGIONS, dim, generator=g), dim=1)
            rec[METHOD_TARGETS] = RegionTargets(rboxes.clamp(max=size - 1), emb.half())
        out.append(rec)
    return out


def time_steps(
    model,
    optimizer,
    data: list[dict],
    steps: int,
    device: str,
    before_step: Callable[[int], None] | None = None,
) -> tuple[float, int]:
    """(seconds per step, peak bytes) of `steps` training steps after one untimed (it allocates). CUDA: peak
    allocated memory, synchronised timing; CPU: the process's peak resident memory. `before_step(k)` runs before
    step k (0 the untimed one); at k = 1 it runs after the sync and before the clock starts."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = 0.0
    for k in range(steps + 1):
        if k == 1 and device == "cuda":
            torch.cuda.synchronize()
        if before_step is not None:
            before_step(k)
        if k == 1:
            t0 = time.perf_counter()
        losses = model(data)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    if device == "cuda":
        return seconds, torch.cuda.max_memory_allocated()
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
