"""Training loops stop cleanly on SIGINT (Ctrl-C) and SIGTERM (a scheduler's kill): the first signal asks the
loop to stop after the step it is in, save a checkpoint and raise `TrainingInterrupted`; a second SIGINT quits
at once without one."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

from .errors import TrainingInterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by the first signal; `signum` is None until then."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def interrupted(self, where: str, saved: str | None, hint: str) -> TrainingInterrupted:
        """The exception a loop raises once it has saved `saved` (None: nothing could be saved)."""
        signum = self.signum or signal.SIGTERM
        what = f"{signal.Signals(signum).name} {where}"
        if saved is None:
            return TrainingInterrupted(f"{what}: no checkpoint written", signum)
        return TrainingInterrupted(f"{what}: checkpoint saved to {saved}", signum, hint)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Within the block, SIGINT / SIGTERM set the yielded StopRequest instead of killing the process; the loop
    polls it between steps. Outside the main thread (where handlers cannot be set) the request never fires."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signum is not None:  # asked twice: quit now
            raise KeyboardInterrupt
        request.signum = signum
        if os.environ.get("RANK", "0") != "0":  # every rank gets Ctrl-C; one says so
            return
        print(
            f"{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping "
            "(Ctrl-C again quits without one)",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is True on any rank of the process group (one small all-reduce per call,
    so every rank stops at the same step); `flag` itself outside a group."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
