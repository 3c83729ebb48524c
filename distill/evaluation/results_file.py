"""A COCO-json results file written as detections arrive (one rank's part per file, joined at the end), so
no list of every detection is ever held in memory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from ..utils.io import atomic_path


class ResultsWriter:
    """Appends result dicts to this rank's part file; `close` joins the ranks' parts into one json list."""

    def __init__(self, path: str | os.PathLike):
        from .distributed import world

        self.path = Path(path)
        self.rank, self.size = world()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._part = self._part_path(self.rank)
        self._f = open(self._part, "w", encoding="utf-8")
        self._first = True

    def _part_path(self, rank: int) -> Path:
        return self.path.parent / f".{self.path.name}.rank{rank}.partial"

    def write(self, results: Iterable[dict]) -> None:
        for r in results:
            seg = r.get("segmentation")
            if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):  # RLE from pycocotools
                r = dict(r, segmentation=dict(seg, counts=seg["counts"].decode("ascii")))
            self._f.write(("" if self._first else ",\n") + json.dumps(r, separators=(",", ":")))
            self._first = False

    def close(self, rank: int = 0, size: int = 1) -> None:
        """Finish the file (every rank calls this; rank 0 writes the joined list atomically)."""
        from .distributed import barrier

        self._f.close()
        if size > 1:
            barrier()
        if rank == 0:
            with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as out:
                out.write("[")
                wrote = False
                for r in range(size):
                    part = self._part_path(r)
                    if part.stat().st_size:
                        out.write(",\n" if wrote else "")
                        with open(part, encoding="utf-8") as f:
                            shutil.copyfileobj(f, out)
                        wrote = True
                out.write("]\n")
            for r in range(size):
                self._part_path(r).unlink(missing_ok=True)
        if size > 1:
            barrier()

    def abort(self) -> None:
        self._f.close()
        self._part.unlink(missing_ok=True)
