"""Progress bars only where someone watches: tqdm draws on a terminal; redirected to a file, it would write one
`\\r`-joined line of every refresh, so there callers log periodic lines instead."""

from __future__ import annotations

import sys


def on_terminal(progress: bool = True) -> bool:
    """True when a bar was asked for and stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


def progress_bar(iterable=None, progress: bool = True, **kwargs):
    """tqdm(iterable, **kwargs), disabled unless `on_terminal(progress)`."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not on_terminal(progress), **kwargs)
