"""One source of defaults (`defaults.py`, yacs with a comment and a valid range per key, as detectron2's):
`get_cfg()` is the torchvision backend's full config with detectron2's key names, so one yaml serves both
backends; `add_distill_config(cfg)` puts the keys detectron2 has not (MODEL.DISTILL, SOLVER.OPTIMIZER,
INPUT.LSJ, DATASETS.ROOT, ...) into any yacs / fvcore / detectron2 CfgNode.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Sequence

import yaml
from fvcore.common.config import CfgNode

from .. import methods as _methods
from ..utils.errors import RANGES, DistillInputError, in_range
from .defaults import _C, ADDED_DEFAULTS, KEY_RANGES, add_keys


class UnknownConfigKey(DistillInputError):
    """A key neither the defaults nor the yaml's bases have (the message suggests the closest known keys);
    `key` is that key."""

    key: str | None = None


def _unknown(key: str | None, message: str, *where) -> UnknownConfigKey:
    e = UnknownConfigKey(message, *where)
    e.key = key
    return e


def _as(node_cls: type, node: CfgNode) -> CfgNode:
    """A copy of `node` made of `node_cls` nodes: yacs merges a yaml only into nodes of its own CfgNode class."""
    return node_cls({k: _as(node_cls, v) if isinstance(v, CfgNode) else v for k, v in node.items()})


def add_method_nodes(cfg: CfgNode) -> CfgNode:
    """MODEL.DISTILL.<NODE> with its defaults for every registered method (a method's node may already exist:
    keys it lacks are added, values it has are kept)."""
    d = cfg.MODEL.DISTILL
    frozen = cfg.is_frozen()
    cfg.defrost()
    for entry in _methods.method_entries():
        if entry.node not in d:
            d[entry.node] = type(cfg)()
        for key, spec in entry.keys.items():
            if key not in d[entry.node]:
                d[entry.node][key] = spec.default
    if frozen:
        cfg.freeze()
    return cfg


def add_distill_config(cfg: CfgNode) -> CfgNode:
    """Add the keys detectron2 has not (`defaults.ADDED_DEFAULTS`: MODEL.DISTILL, SOLVER.OPTIMIZER, INPUT.LSJ,
    ...) with their defaults to an existing config, e.g. detectron2's get_cfg(); its own keys stay."""
    add_keys(cfg, _as(type(cfg), ADDED_DEFAULTS))  # detectron2's CfgNode is a subclass: keep its type
    return add_method_nodes(cfg)


def get_cfg() -> CfgNode:
    """Full default config of the torchvision backend (a fresh copy), with every registered method's node."""
    return add_method_nodes(_C.clone())


def _imports_of(config_file: str | None, overrides: Sequence[str]) -> list[str]:
    """MODEL.DISTILL.IMPORTS of a yaml (with its _BASE_ chain) and of the KEY VALUE overrides, read before the
    config is merged (the modules register the keys the yaml may set)."""
    specs: list = []
    if config_file and os.path.isfile(config_file):
        try:
            raw = CfgNode.load_yaml_with_base(config_file, allow_unsafe=False)
        except Exception:  # noqa: BLE001 - the merge below reports a bad file in one line
            raw = {}
        node = raw.get("MODEL", {}) if isinstance(raw, dict) else {}
        node = node.get("DISTILL", {}) if isinstance(node, dict) else {}
        value = node.get("IMPORTS") if isinstance(node, dict) else None
        specs += [value] if isinstance(value, str) else list(value or [])
    for i in range(0, len(overrides) - 1, 2):
        if str(overrides[i]) == "MODEL.DISTILL.IMPORTS":
            value = str(overrides[i + 1])
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = value
            specs = [parsed] if isinstance(parsed, str) else list(parsed or [])
    return [str(s) for s in specs]


def import_config_modules(config_file: str | None, overrides: Sequence[str] = ()) -> list[str]:
    """Import the modules of MODEL.DISTILL.IMPORTS (see `_imports_of`); returns them with .py files made
    absolute (so a checkpoint's config finds them again from anywhere)."""
    where = os.path.dirname(os.path.abspath(config_file)) if config_file else None
    out = []
    for spec in _imports_of(config_file, overrides):
        _methods.import_module(spec, where)
        if spec.endswith(".py") and not os.path.isabs(spec):
            local = os.path.join(where, spec) if where else spec
            spec = os.path.abspath(local if os.path.isfile(local) else spec)
        out.append(spec)
    return out


def load_config(
    config_file: str | None = None, overrides: Sequence[str] = (), base: CfgNode | None = None
) -> CfgNode:
    """Defaults ← yaml (with `_BASE_` chains) ← KEY VALUE overrides; unknown keys are one clear error. The
    modules of MODEL.DISTILL.IMPORTS are imported first (their methods' keys become known)."""
    imports = import_config_modules(config_file, overrides)
    cfg = add_method_nodes((base or get_cfg()).clone())
    if config_file:
        if not os.path.isfile(config_file):
            raise DistillInputError("config file not found", config_file)
        try:
            cfg.merge_from_file(config_file, allow_unsafe=False)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise DistillInputError(
                f"not valid yaml ({getattr(e, 'problem', None) or type(e).__name__}{where})", config_file
            ) from None
        except OSError as e:  # a _BASE_ that is missing or unreadable
            raise DistillInputError(
                f"cannot read the config ({e.strerror}: {e.filename})", config_file
            ) from None
        except KeyError as e:
            raise _unknown(_key(e), unknown_key_message(_key(e), cfg), config_file) from None
        except (ValueError, TypeError) as e:
            raise DistillInputError(f"bad config value ({_mismatch(e)})", config_file) from None
    if overrides:
        if len(overrides) % 2:
            raise DistillInputError(f"overrides come in KEY VALUE pairs; got {len(overrides)} items")
        try:
            cfg.merge_from_list(_ints_as_floats(cfg, overrides))
        except (KeyError, AssertionError) as e:
            raise _unknown(_key(e), unknown_key_message(_key(e), cfg, " on the command line")) from None
        except (ValueError, TypeError) as e:
            raise DistillInputError(f"bad command-line config value ({_mismatch(e)})") from None
    if imports:
        cfg.MODEL.DISTILL.IMPORTS = imports
    check_config_values(cfg)
    cfg.freeze()
    return cfg


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split("."):
        if not hasattr(node, part):
            return _MISSING
        node = getattr(node, part)
    return node


_MISSING = object()


def check_config_values(cfg) -> None:
    """One DistillInputError for the first numeric setting out of its range (SOLVER.MAX_ITER -1, BASE_LR nan,
    IMS_PER_BATCH 0, SCORE_THRESH_TEST 7, ...): the ranges declared with the defaults (`defaults.KEY_RANGES`,
    both backends; a key a config lacks is skipped) and the method's (its registry `Key`s); and for a training
    size list with a size <= 0. Out of range, each would crash deep inside training or, worse, give a wrong
    result with exit code 0."""
    for key, kind in KEY_RANGES.items():
        v = _lookup(cfg, key)
        if v is not _MISSING and not in_range(v, kind):
            raise DistillInputError(f"config value {key} = {v!r}: must be {RANGES[kind][1]}")
    method = _lookup(cfg, "MODEL.DISTILL.METHOD")
    if method is not _MISSING:
        entry = _methods.get_method_entry(method)  # an unknown name is one line listing the known ones
        node = _lookup(cfg, f"MODEL.DISTILL.{entry.node}")
        for key, spec in entry.keys.items():
            if node is not _MISSING and key in node:
                spec.check(f"MODEL.DISTILL.{entry.node}.{key}", node[key])
    sizes = _lookup(cfg, "INPUT.MIN_SIZE_TRAIN")
    if sizes is not _MISSING:
        sizes = sizes if isinstance(sizes, (list, tuple)) else (sizes,)
        if not sizes or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in sizes):
            raise DistillInputError(
                f"config value INPUT.MIN_SIZE_TRAIN = {sizes!r}: sizes must be integers > 0"
            )


def _ints_as_floats(cfg, overrides: Sequence[str]) -> list[str]:
    """KEY VALUE pairs with an integer given for a float key written as a float (`IMAGE_LOSS_WEIGHT 0` is what
    one types; yacs would refuse it as a type mismatch)."""
    out = list(overrides)
    for i in range(0, len(out) - 1, 2):
        if isinstance(_lookup(cfg, str(out[i])), float) and re.fullmatch(
            r"[+-]?\d+", str(out[i + 1]).strip()
        ):
            out[i + 1] = f"{int(out[i + 1])}.0"
    return out


_MISMATCH = re.compile(
    r"Type mismatch \(<class '([\w.]+)'> vs\. <class '([\w.]+)'>\) with values \((.*) vs\. (.*)\) for config "
    r"key: (\S+)",
    re.S,
)


def _mismatch(e: BaseException) -> str:
    """yacs' type-mismatch message in the user's terms, on one line: which key, what type it takes, what was
    given."""
    m = _MISMATCH.search(str(e))
    if not m:
        return " ".join(str(e).split())[:300]
    want, got, old, new, key = m.groups()
    if want.endswith("CfgNode"):
        return f"{key} is a group of keys, not a value: set the keys under it ({key}.*)"
    if got.endswith("CfgNode"):
        return f"{key} takes a value like {old}, got a group of keys"
    a = lambda t: f"an {t}" if t[0] in "aeiou" else f"a {t}"  # noqa: E731
    return f"{key} takes {a(want)} like {old}, got {new} ({a(got)})"


def config_keys(cfg) -> list[str]:
    """Every leaf key of a config, dotted (SOLVER.MAX_ITER, MODEL.DISTILL.TEACHER.ARCH, ...)."""
    out = []
    for k, v in cfg.items():
        out += [f"{k}.{sub}" for sub in config_keys(v)] if isinstance(v, CfgNode) else [k]
    return out


# keys of earlier versions: the message says where they went
RENAMED_KEYS = {
    **{
        f"MODEL.DISTILL.{k}": f"MODEL.DISTILL.VILD.{k}"
        for k in (
            "TEXT_LOSS_WEIGHT",
            "IMAGE_LOSS_WEIGHT",
            "NOVEL_LOGIT_MODE",
            "REGION_STORE",
            "NUM_DISTILL_PROPOSALS",
        )
    },
    "MODEL.DISTILL.ENSEMBLE.BASE_TEXT_WEIGHT": "MODEL.DISTILL.VILD.BASE_TEXT_WEIGHT",
    "MODEL.DISTILL.ENSEMBLE.NOVEL_TEXT_WEIGHT": "MODEL.DISTILL.VILD.NOVEL_TEXT_WEIGHT",
    "MODEL.DISTILL.ENSEMBLE.ENABLED": "MODEL.DISTILL.METHOD vild_ensemble",
}
# settings that are not distillation, moved out of MODEL.DISTILL to where detectron2's users look for them
MOVED_KEYS = {
    "MODEL.DISTILL.OPTIMIZER": "SOLVER.OPTIMIZER",
    "MODEL.DISTILL.LOG_PERIOD": "SOLVER.LOG_PERIOD",
    "MODEL.DISTILL.CHECKPOINT_MAX_TO_KEEP": "SOLVER.CHECKPOINT_MAX_TO_KEEP",
    "MODEL.DISTILL.DATASETS_ROOT": "DATASETS.ROOT",
    "MODEL.DISTILL.BACKBONE_WEIGHTS": "MODEL.BACKBONE.WEIGHTS",
    "MODEL.DISTILL.FUSED_POOLER": "MODEL.ROI_HEADS.FUSED_POOLER",
    "MODEL.DISTILL.LSJ": "INPUT.LSJ",
    **{f"MODEL.DISTILL.LSJ.{k}": f"INPUT.LSJ.{k}" for k in ("ENABLED", "SIZE", "MIN_SCALE", "MAX_SCALE")},
}
RENAMED_KEYS.update(MOVED_KEYS)


def _pop(tree: dict, dotted: str):
    *path, leaf = dotted.split(".")
    node = tree
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node.pop(leaf, _MISSING) if isinstance(node, dict) else _MISSING


def _put(tree: dict, dotted: str, value) -> None:
    *path, leaf = dotted.split(".")
    node = tree
    for part in path:
        node = node.setdefault(part, {})
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        node[leaf].update(value)  # a node whose leaves moved first: what is left joins them
    else:
        node[leaf] = value


def upgrade_config_tree(tree: dict) -> dict:
    """A resolved config of an earlier version (the yaml a checkpoint carries, as a dict) in today's keys: moved
    keys to their new places, and the method its old settings chose (MODEL.DISTILL.IMAGE_LOSS_WEIGHT 0: vild_text;
    ENSEMBLE.ENABLED: vild_ensemble; else vild). A config of today comes back unchanged."""
    d = tree.get("MODEL", {}).get("DISTILL") if isinstance(tree.get("MODEL"), dict) else None
    if not isinstance(d, dict):
        return tree
    old_method = "METHOD" not in d and any(
        k in d for k in ("IMAGE_LOSS_WEIGHT", "ENSEMBLE", "TEXT_LOSS_WEIGHT")
    )
    image_weight = d.get("IMAGE_LOSS_WEIGHT", 0.5)
    ensemble = (
        bool((d.get("ENSEMBLE") or {}).get("ENABLED", False))
        if isinstance(d.get("ENSEMBLE"), dict)
        else False
    )
    for old, new in sorted(RENAMED_KEYS.items(), key=lambda kv: -kv[0].count(".")):
        if " " in new:  # a key replaced by a choice, not moved
            _pop(tree, old)
            continue
        value = _pop(tree, old)
        if value is not _MISSING:
            _put(tree, new, value)
    if isinstance(d.get("ENSEMBLE"), dict) and not d["ENSEMBLE"]:
        d.pop("ENSEMBLE")
    if old_method:
        d["METHOD"] = "vild_ensemble" if ensemble else ("vild_text" if not image_weight else "vild")
    return tree


def unknown_key_message(key: str, cfg, where: str = "") -> str:
    """`unknown config key K`, with the closest known keys (a typo, or a leaf under the wrong node), or where a
    key of an earlier version went."""
    if key in MOVED_KEYS:
        return f"config key {key}{where} is now {MOVED_KEYS[key]}"
    if key in RENAMED_KEYS or key == "MODEL.DISTILL.ENSEMBLE":
        new = RENAMED_KEYS.get(key, "MODEL.DISTILL.METHOD vild_ensemble and MODEL.DISTILL.VILD.*")
        return (
            f"config key {key}{where} is now {new} (MODEL.DISTILL.METHOD chooses the method: "
            f"{', '.join(_methods.method_names())})"
        )
    keys = config_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=2, cutoff=0.75)
    if not close:  # MAX_ITERS or DISTILL.TEMPERATURE: compare the last part with the known keys' last parts
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {}
        for k in keys:
            by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
        close = [
            k for m in difflib.get_close_matches(leaf, list(by_leaf), n=2, cutoff=0.8) for k in by_leaf[m]
        ]
    hint = f"; did you mean {' or '.join(close[:2])}?" if close else ""
    return f"unknown config key {key}{where}{hint}"


def _key(e: BaseException) -> str:
    msg = str(e.args[0]) if e.args else str(e)
    for prefix in ("Non-existent config key: ", "Non-existent key: "):
        msg = msg.replace(prefix, "")
    return msg.strip("'\"")


def check_schedule(cfg) -> list[str]:
    """Warnings for a solver schedule that trains at a tiny learning rate throughout (a MAX_ITER override below
    the yaml's WARMUP_ITERS: AP 0 with exit 0). Returns the warning lines (printed by the caller)."""
    s = cfg.SOLVER
    warn = []
    if s.WARMUP_ITERS > 0 and s.MAX_ITER < s.WARMUP_ITERS:
        warn.append(
            f"SOLVER.MAX_ITER {s.MAX_ITER} is below SOLVER.WARMUP_ITERS {s.WARMUP_ITERS}: the whole run is "
            f"warm-up and never reaches BASE_LR {s.BASE_LR:g}; lower SOLVER.WARMUP_ITERS with MAX_ITER"
        )
    return warn
