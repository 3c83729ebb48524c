"""Class embeddings on disk: a (C, D) float32 .npy plus a json sidecar of provenance, checked on load."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..utils.errors import DistillInputError
from ..utils.io import atomic_write_bytes, atomic_write_json, read_json

FORMAT = "distill.class_embeddings/1"


def names_sha256(names: Sequence[str]) -> str:
    """Hash of the ordered class list (order matters: row i is class i)."""
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


@dataclass
class ClassEmbeddings:
    """embeddings: (C, D) L2-normalised; class_names: C names; provenance: teacher, templates, ..."""

    embeddings: torch.Tensor
    class_names: list[str]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.embeddings.ndim != 2:
            raise DistillInputError(
                f"class embeddings must be (C, D), got shape {tuple(self.embeddings.shape)}"
            )
        if self.embeddings.shape[0] != len(self.class_names):
            raise DistillInputError(
                f"{self.embeddings.shape[0]} embeddings for {len(self.class_names)} class names"
            )
        if len(self.class_names) == 0:
            raise DistillInputError("empty vocabulary: no class names")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.class_names)

    def save(self, path: str | os.PathLike) -> Path:
        """Write `path` (.npy) and `path.json`, each atomically; returns `path`."""
        path = Path(path)
        arr = self.embeddings.detach().float().cpu().numpy()
        buf = io.BytesIO()
        np.save(buf, arr)
        data = buf.getvalue()
        meta = {
            "format": FORMAT,
            "shape": list(arr.shape),
            "dim": int(arr.shape[1]),
            "normalized": True,
            "class_names": list(self.class_names),
            "class_names_sha256": names_sha256(self.class_names),
            "sha256": hashlib.sha256(data).hexdigest(),
            **self.provenance,
        }
        atomic_write_bytes(path, data)
        atomic_write_json(sidecar_path(path), meta, indent=1)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        expected_dim: int | None = None,
        expected_names: Sequence[str] | None = None,
    ) -> "ClassEmbeddings":
        """Load and check: sidecar present, file hash, shape, normalisation, and the expected dim / names."""
        path = Path(path)
        if not path.is_file():
            raise DistillInputError("class embeddings file not found", path)
        meta = read_json(sidecar_path(path), what="class embeddings sidecar")
        if meta.get("format") != FORMAT:
            raise DistillInputError(
                f"sidecar format {meta.get('format')!r} is not {FORMAT!r}", sidecar_path(path)
            )
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise DistillInputError(
                "file does not match the sha256 in its sidecar (corrupt or replaced)", path
            )
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise DistillInputError(f"not a .npy array ({e})", path) from None
        names = list(meta.get("class_names", []))
        if arr.ndim != 2 or list(arr.shape) != list(meta.get("shape", [])) or arr.shape[0] != len(names):
            raise DistillInputError(
                f"array shape {arr.shape} disagrees with its sidecar ({len(names)} names)", path
            )
        if names_sha256(names) != meta.get("class_names_sha256"):
            raise DistillInputError("class list does not match its hash in the sidecar", sidecar_path(path))
        if not np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-3):
            raise DistillInputError("rows are not L2-normalised", path)
        if expected_dim is not None and arr.shape[1] != expected_dim:
            raise DistillInputError(
                f"embedding dim {arr.shape[1]} does not match the model's {expected_dim} "
                f"(made by teacher {meta.get('teacher', {}).get('arch', '?')})",
                path,
            )
        if expected_names is not None and list(expected_names) != names:
            diff = next(
                (i for i, (a, b) in enumerate(zip(expected_names, names)) if a != b),
                min(len(names), len(expected_names)),
            )
            raise DistillInputError(
                f"class list differs from the expected one ({len(names)} vs "
                f"{len(expected_names)} classes, first difference at index {diff})",
                path,
            )
        provenance = {
            k: v
            for k, v in meta.items()
            if k
            not in ("format", "shape", "dim", "normalized", "class_names", "class_names_sha256", "sha256")
        }
        return cls(torch.from_numpy(arr.astype(np.float32)), names, provenance)
