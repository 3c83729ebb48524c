"""Reading torch files the user names (--weights, MODEL.WEIGHTS, last_checkpoint): a zero-byte, truncated or
foreign file is one DistillInputError, never EOFError / PytorchStreamReader / KeyError: 'model'."""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

from .errors import DistillInputError


@contextlib.contextmanager
def torch_file_errors(path: str | os.PathLike, what: str = "checkpoint") -> Iterator[None]:
    """Around a torch.load of `path` (ours or a checkpointer's): a missing, empty, truncated or foreign file
    becomes one DistillInputError."""
    path = Path(path)
    if not path.is_file():
        raise DistillInputError(f"{what} not found", path)
    if path.stat().st_size == 0:
        raise DistillInputError(f"{what} is an empty file (an interrupted copy or save?)", path)
    try:
        yield
    except (
        EOFError,
        RuntimeError,
        pickle.UnpicklingError,
        ValueError,
        AttributeError,
        ImportError,
        UnicodeDecodeError,
        IndexError,
        KeyError,
        OSError,
    ) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DistillInputError(
            f"cannot read {what}: truncated, corrupt or not a torch file ({first})", path
        ) from None


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint", weights_only: bool = True) -> Any:
    """torch.load on CPU with one-line errors for a missing, empty, truncated or non-torch file."""
    import torch  # lazy: tools' --help stays fast

    with torch_file_errors(path, what):
        return torch.load(path, map_location="cpu", weights_only=weights_only)


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint", weights_only: bool = True) -> dict:
    """A training checkpoint: a dict whose "model" is a state dict of tensors (a bare state dict is wrapped)."""
    import torch

    obj = load_torch_file(path, what, weights_only)
    if (
        isinstance(obj, dict)
        and "model" not in obj
        and obj
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        obj = {"model": obj}
    state = obj.get("model") if isinstance(obj, dict) else None
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise DistillInputError(
            f"not a model checkpoint (no 'model' state dict of tensors in the {what})", path
        )
    return obj


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The file OUTPUT_DIR/last_checkpoint names (None without the tag); a tag naming a missing, empty or
    truncated file is one error that says what to do, not a traceback at resume."""
    tag = Path(output_dir) / "last_checkpoint"
    if not tag.is_file():
        return None
    name = tag.read_text().strip()
    path = Path(output_dir) / name
    hint = "; delete it (and last_checkpoint) to resume from an earlier one, or start a new OUTPUT_DIR"
    if not name or not path.is_file():
        raise DistillInputError(f"last_checkpoint names {name!r}, which is not there{hint}", tag)
    if path.stat().st_size == 0:
        raise DistillInputError(f"last_checkpoint names {name!r}, an empty file{hint}", tag)
    return path


META_KEY = "distill"
# where a detector's state holds its distillation method's own heads and buffers
METHOD_PREFIX = "roi_heads.box_predictor.method."


# tensor-name prefixes of earlier versions (before the method layer), in the order they are tried
LEGACY_PREFIXES = (
    ("roi_heads.box_predictor.image_embed_head.", "roi_heads.box_predictor.method.image_embed_head."),
    ("roi_heads.image_embed_head.", "roi_heads.box_predictor.method.image_embed_head."),
    ("roi_heads.embed_head.", "roi_heads.box_predictor.embed_head."),
    ("roi_heads.classifier.", "roi_heads.box_predictor.classifier."),
    ("roi_heads.box_regressor.", "roi_heads.box_predictor.box_regressor."),
    ("roi_heads.vild_mask_head.", "roi_heads.mask_head."),
)


def upgrade_state_dict(state: dict) -> dict:
    """A detector state dict with the tensor names of earlier versions renamed to today's (the same tensors:
    the RoI heads' text branch, classifier and regressor moved into the box predictor, ViLD-ensemble's image
    head into the method)."""
    out = {}
    for k, v in state.items():
        for old, new in LEGACY_PREFIXES:
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        out[k] = v
    return out


def inference_meta(backend: str, cfg, vocabulary=None) -> dict:
    """What a checkpoint carries so inference needs no training files: the backend, the resolved config (yaml
    text) and the training vocabulary's provenance and class names."""
    meta = {"backend": backend, "config": cfg.dump()}
    if vocabulary is not None:
        meta["vocabulary"] = {
            "class_names": list(vocabulary.class_names),
            "provenance": dict(vocabulary.provenance),
        }
    return meta


def checkpoint_meta(path: str | os.PathLike) -> dict:
    """The checkpoint's inference metadata; for a checkpoint without it, the backend told by its tensor names
    ({} when neither says)."""
    import torch

    with torch_file_errors(path, "checkpoint"):
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(obj, dict):
        return {}
    if isinstance(obj.get(META_KEY), dict):
        return obj[META_KEY]
    keys = list((obj.get("model") if isinstance(obj.get("model"), dict) else obj).keys())
    if any(k.startswith("proposal_generator.") for k in keys):
        return {"backend": "detectron2"}
    if any(k.startswith("rpn.") for k in keys):
        return {"backend": "torchvision"}
    return {}


# what each kind of checkpoint is for, in the one line that refuses it where another kind is expected
KINDS = {
    "detector": "a detector checkpoint (tools/train_net.py)",
    "segmenter": "a segmenter checkpoint (the quickstart's semseg stage; tools/demo.py --task semseg)",
    "teacher": "a teacher (open_clip) checkpoint (tools/train_teacher.py; MODEL.DISTILL.TEACHER.PRETRAINED)",
    "unknown": "not a model checkpoint of this project (no detector, segmenter or teacher weights in it)",
}


def _state_keys(obj) -> list[str]:
    state = obj.get("model") if isinstance(obj.get("model"), dict) else obj
    return [k for k in state if isinstance(k, str)]


def checkpoint_kind(path: str | os.PathLike) -> tuple[str, dict]:
    """(kind, inference metadata) of a torch file: kind is one of KINDS, told by its structure and tensor names
    (a detector's rpn / proposal_generator and roi_heads, a segmenter's predictor.embed_head, a teacher's text
    tower); the metadata is `checkpoint_meta`'s."""
    import torch

    with torch_file_errors(path, "checkpoint"):
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(obj, dict):
        return "unknown", {}
    keys = _state_keys(obj)
    if any(k.startswith("predictor.embed_head.") for k in keys) or "class_values" in obj:
        config = obj.get("config") if isinstance(obj.get("config"), str) else None
        return "segmenter", {"backend": "torchvision", "config": config}
    if any(k.startswith("sem_seg_head.") for k in keys) and not any(k.startswith("roi_heads.") for k in keys):
        return "segmenter", {"backend": "detectron2"}
    if any(k.startswith(("proposal_generator.", "rpn.")) for k in keys) and any(
        k.startswith("roi_heads.") for k in keys
    ):
        meta = obj[META_KEY] if isinstance(obj.get(META_KEY), dict) else {}
        if "backend" not in meta:
            d2 = any(k.startswith("proposal_generator.") for k in keys)
            meta = {**meta, "backend": "detectron2" if d2 else "torchvision"}
        return "detector", meta
    if "text_projection" in keys or any(k.startswith("visual.") for k in keys):
        return "teacher", {}
    return "unknown", {}


def require_checkpoint(path: str | os.PathLike, expected: str, flag: str = "--weights") -> dict:
    """The inference metadata of `path` (backend, config yaml text, training vocabulary: what it carries) when
    it is a checkpoint of kind `expected` ("detector" or "segmenter"); any other kind is one DistillInputError
    saying what it is and what was expected."""
    kind, meta = checkpoint_kind(path)
    if kind != expected:
        raise DistillInputError(f"{flag} is {KINDS[kind]}, but {KINDS[expected]} is expected here", path)
    return meta


def refuse_other_settings(saved, current: dict, path) -> None:
    """Resuming a loop state written with other settings is one line naming each difference (`saved`: the
    checkpoint's settings dict, or None / anything else for none recorded)."""
    if saved == current:
        return
    saved = saved if isinstance(saved, dict) else {}
    diff = ", ".join(f"{k} {saved.get(k)!r} vs {v!r}" for k, v in current.items() if saved.get(k) != v)
    raise DistillInputError(
        f"this checkpoint was written with other settings ({diff}): pass the same flags to resume, "
        "or choose another --output-dir",
        path,
    )


def save_loop_state(path, key: str, module, opt, sched, rng, step: int, config: dict) -> None:
    """A small training loop's resumable state, written atomically: `module`'s weights under `key`, the
    optimizer, scheduler, Python and torch RNG states, the step done and the run's config."""
    import torch

    from .io import atomic_path

    state = {
        key: module.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng.getstate(),
        "torch_rng": torch.get_rng_state(),
        "step": step,
        "config": config,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_loop_state(state: dict, key: str, module, opt, sched, rng) -> int:
    """`save_loop_state`'s dict back into the loop's objects; returns the step to continue from."""
    import torch

    module.load_state_dict(state[key])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.setstate(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"]
