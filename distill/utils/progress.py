"""Progress bars only where someone watches: tqdm draws on a terminal; redirected to a file, it would write one
`\\r`-joined line of every refresh, so there callers log periodic lines instead (`job_progress`)."""

from __future__ import annotations

import collections
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


class RateMeter:
    """Seconds per unit over the recent past, for an ETA: over the last `window` intervals between updates (a
    line, a logging period), so the ETA follows the current speed instead of a whole-run average that a slow
    start (loading, warm-up) inflates long after it is over."""

    def __init__(self, n0: int = 0, clock=time.monotonic, window: int = 3):
        self.clock = clock
        self._points = collections.deque([(n0, clock())], maxlen=window + 1)

    def update(self, n: int) -> None:
        """`n` units done in all, now."""
        if n > self._points[-1][0]:
            self._points.append((n, self.clock()))

    @property
    def per_unit(self) -> float | None:
        """Seconds per unit over the window (None before any interval)."""
        (n0, t0), (n1, t1) = self._points[0], self._points[-1]
        return None if n1 <= n0 else (t1 - t0) / (n1 - n0)

    def eta(self, remaining: int) -> float | None:
        """Seconds until `remaining` more units are done at the recent speed (None before any interval)."""
        per = self.per_unit
        return None if per is None else remaining * per


class LineProgress:
    """tqdm's interface (iteration, update, set_postfix, close, with) for a job nobody watches on a terminal:
    a line on stderr every `every` seconds (done / total, rate, ETA) and one when it ends, so a log file
    shows where a 2-hour job stands without a `\\r`-joined line."""

    def __init__(
        self, iterable=None, total=None, desc: str = "", unit: str = "it", initial: int = 0, clock=None, **_
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._n0 = initial
        self.postfix = ""
        self.every = float(os.environ.get("DISTILL_PROGRESS_EVERY", LINE_EVERY_S))
        self.clock = clock or time.monotonic
        self._t0 = self._last = self.clock()
        self._meter = RateMeter(initial, self.clock)
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
        now = self.clock()
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
        now = self.clock()
        if self._printed or now - self._t0 >= self.every:
            self._line(now, done=True)

    def _line(self, now: float, done: bool = False) -> None:
        self._meter.update(self.n)  # once a line: the recent rate is over the last few lines' intervals
        recent = self._meter.per_unit
        rate = 1 / recent if not done and recent else (self.n - self._n0) / max(now - self._t0, 1e-9)
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f}%)"
        parts = [f"{self.desc}: {count}", f"{rate:.3g} {self.unit}/s"]
        if done:
            parts.append(f"done in {datetime.timedelta(seconds=int(now - self._t0))}")
        elif self.total and recent is not None:
            parts.append(f"eta {datetime.timedelta(seconds=int(self._meter.eta(self.total - self.n)))}")
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
