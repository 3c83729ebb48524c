"""Dataset dicts as one byte buffer (detectron2's DatasetFromList(serialize=True) idea): a list of 100k LVIS dicts
is millions of Python objects, and every data-loader worker that reads them touches their reference counts,
copying the pages the fork shared; one numpy buffer stays shared, so memory does not grow with workers."""

from __future__ import annotations

import pickle

import numpy as np


class SerializedList:
    """An immutable list of picklable items stored as one uint8 buffer plus (N + 1,) int64 offsets."""

    def __init__(self, items: list):
        blobs = [
            np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for x in items
        ]
        self._offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in blobs], out=self._offsets[1:])
        self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int):
        start, end = self._offsets[i], self._offsets[i + 1]
        return pickle.loads(memoryview(self._buffer[start:end]))

    @property
    def nbytes(self) -> int:
        return int(self._buffer.nbytes + self._offsets.nbytes)
