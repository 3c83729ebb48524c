"""Devices the user names (--device, MODEL.DEVICE): checked where they enter, so that `cuda` on a machine
without a GPU is one clear line, not a driver error blamed on whatever touched the device first."""

from __future__ import annotations

from .errors import DistillInputError


def check_device(spec: str, what: str = "--device") -> str:
    """`spec` unchanged when this machine has that device; otherwise one DistillInputError naming `what`."""
    import torch  # lazy: tools' --help stays fast

    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise DistillInputError(f"{what} {spec!r} is not a device (cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return spec
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DistillInputError(f"{what} {spec}: this machine has no usable CUDA device; use cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise DistillInputError(
                f"{what} {spec}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}"
            )
        return spec
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise DistillInputError(f"{what} {spec}: no {dev.type} device is available here; use cpu")
    return spec
