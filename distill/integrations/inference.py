"""What every inference tool (demo, web demo, export, proposals, --eval-only) does with a checkpoint first: check
that it is the kind of model the tool runs (one line saying what it is otherwise), and take its config: the
resolved one it carries unless the user gives --config-file, whose teacher must then be the one it was
trained with. A checkpoint alone is enough: no training files are read."""

from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace
from typing import Callable, Sequence

import yaml

from ..config import load_config, upgrade_config_tree
from ..teacher.checks import teacher_mismatch
from ..utils.checkpoint import require_checkpoint
from ..utils.errors import DistillInputError


def load_config_text(text: str, opts: Sequence[str] = (), load: Callable = load_config):
    """`load` (a backend's load_config) of a config given as yaml text, e.g. the one a checkpoint carries (the
    keys of earlier versions upgraded: `upgrade_config_tree`)."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        tree = None
    if isinstance(tree, dict):
        text = yaml.safe_dump(upgrade_config_tree(tree), sort_keys=False)
    fd, path = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return load(path, list(opts))
    finally:
        os.unlink(path)


def _trained_teacher(text: str):
    """MODEL.DISTILL.TEACHER's ARCH / PRETRAINED of a checkpoint's config text (None if it has none)."""
    try:
        t = yaml.safe_load(text)["MODEL"]["DISTILL"]["TEACHER"]
        return SimpleNamespace(ARCH=str(t["ARCH"]), PRETRAINED=str(t.get("PRETRAINED") or ""))
    except (yaml.YAMLError, KeyError, TypeError):
        return None


def _stale_test_embeddings(text: str, opts: Sequence[str]) -> list[str]:
    """The override that drops the training run's MODEL.DISTILL.TEST_CLASS_EMBEDDINGS from a checkpoint's config
    when that file is not on this machine (it only caches the names' embeddings; a path the user gives in
    `opts` is kept, and then checked)."""
    key = "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS"
    try:
        path = yaml.safe_load(text)["MODEL"]["DISTILL"]["TEST_CLASS_EMBEDDINGS"]
    except (yaml.YAMLError, KeyError, TypeError):
        return []
    if not path or key in list(opts)[0::2] or os.path.isfile(path):
        return []
    return [key, ""]


def inference_config(
    weights: str,
    expected: str,
    config_file: str | None = None,
    opts: Sequence[str] = (),
    load: Callable = load_config,
    flag: str = "--weights",
    config_flag: str = "--config-file",
    torchvision_only: str | None = None,
) -> tuple[object, dict]:
    """(config, metadata) to run checkpoint `weights`, which must be a `expected` ("detector" or "segmenter")
    checkpoint: `config_file` + `opts` when a config file is given (its teacher checked against the
    checkpoint's), else the config the checkpoint carries + `opts`. `torchvision_only`: the caller runs only
    torchvision-backend models, and this sentence says so when the checkpoint is another backend's (before
    its config, which the torchvision config would not read, is loaded)."""
    meta = require_checkpoint(weights, expected, flag)
    made = meta.get("backend")
    if torchvision_only and made not in (None, "torchvision"):
        raise DistillInputError(f"{flag} was trained with the {made} backend; {torchvision_only}", weights)
    saved = meta.get("config") if isinstance(meta.get("config"), str) else None
    if not config_file:
        if saved is None:
            raise DistillInputError(
                f"this {expected} checkpoint carries no config (an older one); pass {config_flag}", weights
            )
        return load_config_text(saved, list(opts) + _stale_test_embeddings(saved, opts), load), meta
    cfg = load(config_file, list(opts))
    made = _trained_teacher(saved) if saved else None
    if made is not None:
        t = cfg.MODEL.DISTILL.TEACHER
        why = teacher_mismatch({"teacher": {"arch": made.ARCH, "pretrained": made.PRETRAINED}}, t)
        if why:
            raise DistillInputError(
                f"{config_flag}'s MODEL.DISTILL.TEACHER is {t.ARCH}/{t.PRETRAINED or '-'}, but the checkpoint "
                f"was trained with {made.ARCH}/{made.PRETRAINED or '-'}: its vocabulary would be encoded by "
                f"another teacher (leave {config_flag} out to use the checkpoint's own config)",
                weights,
            )
    return cfg, meta


def eval_only_config(opts: Sequence[str], load: Callable = load_config):
    """`train_net --eval-only` without --config-file: the config MODEL.WEIGHTS carries, with the command line's
    KEY VALUE `opts` over it. OUTPUT_DIR must be among them: the carried config names the training run's
    folder, which an evaluation does not write into."""
    pairs = dict(zip(list(opts)[0::2], list(opts)[1::2]))
    if not pairs.get("MODEL.WEIGHTS"):
        raise DistillInputError(
            "--eval-only without --config-file needs MODEL.WEIGHTS (the checkpoint whose config it runs)"
        )
    if not pairs.get("OUTPUT_DIR"):
        raise DistillInputError(
            "--eval-only without --config-file needs OUTPUT_DIR for the evaluation's files (the checkpoint's "
            "config names its training folder, which is not written)"
        )
    from ..model_zoo import resolve_weights

    weights = resolve_weights(pairs["MODEL.WEIGHTS"])
    cfg, _ = inference_config(weights, "detector", None, opts, load, flag="MODEL.WEIGHTS")
    return cfg
