"""Progress bars only where someone watches: tqdm draws on a terminal; redirected to a file, it would write one
`\\r`-joined line of every refresh, so there callers log periodic lines instead (`job_progress`)."""

from __future__ import annotations

import datetime
import os
import sys
import time


def on_terminal(progress: bool = True) -> bool:
    """True when a bar was asked for and stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


def progress_bar(iterable=None, progress: bool = True, **kwargs):
    """tqdm(iterable, **kwargs), disabled unless `on_terminal(progress)`."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not on_terminal(progress), **kwargs)


# seconds between the lines a long job prints when no bar is drawn ($DISTILL_PROGRESS_EVERY overrides)
LINE_EVERY_S = 60.0


class LineProgress:
    """tqdm's interface (iteration, update, set_postfix, close, with) for a job nobody watches on a terminal:
    a line on stderr every `every` seconds (done / total, rate, ETA) and one when it ends, so a log file
    shows where a 2-hour job stands without a `\\r`-joined line."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it", initial: int = 0, **_):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._n0 = initial
        self.postfix = ""
        self.every = float(os.environ.get("DISTILL_PROGRESS_EVERY", LINE_EVERY_S))
        self._t0 = self._last = time.monotonic()
        self._printed = self._closed = False

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._line(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        now = time.monotonic()
        if self._printed or now - self._t0 >= self.every:
            self._line(now, done=True)

    def _line(self, now: float, done: bool = False) -> None:
        rate = (self.n - self._n0) / max(now - self._t0, 1e-9)
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f}%)"
        parts = [f"{self.desc}: {count}", f"{rate:.3g} {self.unit}/s"]
        if done:
            parts.append(f"done in {datetime.timedelta(seconds=int(now - self._t0))}")
        elif self.total and rate > 0:
            parts.append(f"eta {datetime.timedelta(seconds=int((self.total - self.n) / rate))}")
        if self.postfix:
            parts.append(self.postfix)
        print(f"[{time.strftime('%H:%M:%S')}] " + ", ".join(parts), file=sys.stderr, flush=True)
        self._printed = True


def job_progress(iterable=None, progress: bool = True, **kwargs):
    """A long job's progress: tqdm's bar on a terminal (when `progress`), periodic lines otherwise."""
    if on_terminal(progress):
        from tqdm import tqdm

        return tqdm(iterable, **kwargs)
    return LineProgress(iterable, **kwargs)
