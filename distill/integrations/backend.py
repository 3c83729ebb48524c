"""The `Backend` protocol the tools, the quickstart pipeline and the benchmarks drive a training framework
through, `get_backend(name)`, and what the tools check before a backend loads.

Two implementations, one per framework, with the same behaviour on the same config:
`distill.integrations.torchvision.backend.TorchvisionBackend` and
`distill.integrations.detectron2.backend.Detectron2Backend`. A new framework is one more module with a class
that has these methods and one more entry in `BACKENDS`.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from ..utils.errors import DistillInputError

if TYPE_CHECKING:  # annotations only: tools' --help does not pay for torch
    import torch

    from ..teacher.embeddings import ClassEmbeddings

BACKENDS = ("torchvision", "detectron2")

# what `--backend auto` does with a checkpoint (backend_name_for, get_backend); the tools' --help and GETTING_STARTED.md
# say exactly this
AUTO_WITH_CHECKPOINT = (
    "auto: the backend that trained the checkpoint (it records it); for a checkpoint without that record, "
    "detectron2 when installed, else torchvision"
)


@runtime_checkable
class Backend(Protocol):
    """What a training framework does, and only that: its config, its dataset catalog, training (a library call
    and its `tools/train_net.py` entry point), loading a checkpoint, inference, RPN proposals and evaluation.
    What an application does with these (the quickstart's stages and picture, the benchmarks' data, the
    tools' outputs) lives in that application and composes them."""

    name: str

    def load_config(self, config_file: str | None, opts: Sequence[str] = ()):
        """Defaults ← yaml (with its _BASE_) ← KEY VALUE overrides, in this backend's config type."""

    def register_datasets(self, root: str | os.PathLike) -> list[str]:
        """The datasets under a datasets root (DATASETS.ROOT's layout: synthetic/, coco/, lvis/)
        in this framework's catalog, read on first use (a missing one is no error here); their names."""

    def train(self, cfg, progress: bool = True) -> None:
        """Train cfg's model into cfg.OUTPUT_DIR, resuming from its last checkpoint; no evaluation."""

    def train_net(self, args: argparse.Namespace) -> int:
        """`tools/train_net.py` in one process (or the process group its environment describes): the
        framework's own setup, launch, --eval-only and --resume, then evaluation on DATASETS.TEST."""

    def load_model(self, cfg, weights: str) -> torch.nn.Module:
        """cfg's model with a checkpoint's weights (another architecture is one clear error)."""

    def load_for_inference(
        self, cfg, weights: str, vocabulary: ClassEmbeddings, novel: torch.Tensor | None = None
    ) -> torch.nn.Module:
        """A trained model in eval mode, classifying into `vocabulary`."""

    def predict(self, model, cfg, record: dict) -> dict:
        """One {file_name, height, width, image_id} → boxes (N, 4) XYXY, scores (N,), labels (N,) [masks
        (N, H, W) float 0/1], in original pixels."""

    def evaluate(self, cfg, model, dataset: str) -> dict:
        """Flat OV metrics ({box,mask}_AP{,50}{,_base,_novel}) of `model` on a registered dataset."""

    def iter_dataset_proposals(
        self, model, dicts: list[dict], min_size: int, max_size: int, top_k: int = 300, progress: bool = True
    ):
        """The RPN's top_k proposals, one image at a time and kept nowhere: yields (image_id, boxes (K, 4) XYXY,
        scores (K,)) in original pixels."""


def dataset_proposals(
    backend: Backend,
    model,
    dicts: list[dict],
    min_size: int,
    max_size: int,
    top_k: int = 300,
    progress: bool = True,
) -> list[dict]:
    """`backend.iter_dataset_proposals` as the json list the region dump reads: records {image_id, bbox XYWH,
    score} in original pixels."""
    from ..teacher.regions import proposal_records  # torch: not for a tool's --help

    per_image = backend.iter_dataset_proposals(model, dicts, min_size, max_size, top_k, progress)
    return [r for image_id, boxes, scores in per_image for r in proposal_records(image_id, boxes, scores)]


def detectron2_installed() -> bool:
    """detectron2 imports (and so does this package's detectron2 backend)."""
    if importlib.util.find_spec("detectron2") is None:
        return False
    from . import detectron2

    return detectron2._IMPORT_ERROR is None


def backend_name_for(name: str, weights: str | None = None) -> str:
    """The backend to run `weights` with: the one that trained it (its metadata, else its tensor names) unless
    `name` is another (one clear error naming the flag to pass); without a checkpoint, `name` as it is."""
    from ..utils.checkpoint import checkpoint_meta

    made = checkpoint_meta(weights).get("backend") if weights and os.path.isfile(weights) else None
    if made is None:
        return name
    if name == "auto":
        if made == "detectron2" and not detectron2_installed():
            raise DistillInputError(
                "this checkpoint was trained with the detectron2 backend, which is not "
                "installed (INSTALL.md, 'detectron2')",
                weights,
            )
        return made
    if made != name:
        raise DistillInputError(
            f"this checkpoint was trained with the {made} backend; pass --backend {made} (or auto)", weights
        )
    return name


def check_config_early(config_file: str | None, opts: Sequence[str] = (), backend: str = "torchvision"):
    """The config errors a tool reports before it imports torch (a missing file, bad yaml, an unknown key with
    the closest known ones, a value out of range): the torchvision backend's defaults need only fvcore and
    yaml. Returns that config, or None where the detectron2 backend may run a config with a key only
    detectron2 has (its own load, later, judges it)."""
    from ..config import UnknownConfigKey, load_config

    try:
        return load_config(config_file or None, opts)
    except UnknownConfigKey as e:
        d2 = backend == "detectron2" or (backend == "auto" and importlib.util.find_spec("detectron2"))
        keys = detectron2_config_keys() if d2 else frozenset()
        if d2 and (not keys or e.key is None or _known_to(e.key, keys)):
            return None
        raise


def _known_to(key: str, keys: frozenset[str]) -> bool:
    """`key` is one of `keys` (leaves, and nodes written "NODE."), or a node above some of them."""
    return key in keys or any(k.startswith(key + ".") for k in keys)


@functools.lru_cache(maxsize=1)
def detectron2_config_keys() -> frozenset[str]:
    """The keys of detectron2's default config, read from the text of detectron2/config/defaults.py (importing
    it imports torch: seconds); empty when detectron2 is not installed or the file does not parse."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    path = Path(list(spec.submodule_search_locations)[0]) / "config" / "defaults.py"
    try:
        found = re.findall(r"^_C\.([A-Z0-9_.]+)\s*=\s*(CN\()?", path.read_text(), re.M)
    except OSError:
        return frozenset()
    keys = frozenset(k + "." if node else k for k, node in found)  # a node: only keys under it are known
    return keys if len(keys) > 100 else frozenset()  # a file of another shape: let detectron2 judge


def check_weights_early(spec: str, flag: str = "--weights") -> str:
    """A checkpoint path or model-zoo name → the local file (a zoo name is fetched); neither is one clear
    error before any heavy import. Other frameworks' urls (detectron2://) pass as they are."""
    from ..model_zoo import resolve_weights

    path = resolve_weights(spec)
    if "://" not in path and not os.path.isfile(path):
        raise DistillInputError(
            f"{flag}: weights not found" + (" (a folder)" if os.path.isdir(path) else ""), path
        )
    return path


def get_backend(name: str = "auto") -> Backend:
    """ "torchvision", "detectron2", or "auto" (detectron2 when it is installed). A missing detectron2 is one
    clear DistillInputError."""
    if name == "auto":
        name = "detectron2" if detectron2_installed() else "torchvision"
    if name == "torchvision":
        from .torchvision.backend import TorchvisionBackend

        return TorchvisionBackend()
    if name == "detectron2":
        from . import detectron2

        return detectron2.Detectron2Backend()  # Detectron2Missing (a DistillInputError) without detectron2
    raise DistillInputError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
