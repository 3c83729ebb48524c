"""What a teacher was trained on, when that is known to be narrow, and the one-line warnings when a tool asks it
about other words or other images.

The project's tiny teachers learned a synthetic world only (coloured shapes, captions of their names and
colours): their text embeddings of "cat" or their region embeddings of a photo are numbers without meaning,
and a student distilled from them inherits that. A model-zoo teacher records its world in its manifest entry
(``"trained_on"``); a checkpoint of the project's own tiny architectures (``model_configs/``) can only come from
``tools/train_teacher.py`` and so has the synthetic world. Real CLIP teachers have no such record: no warning.
Each warning is logged once per process.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

REAL_TEACHER = (
    "For real photos use a real CLIP teacher, e.g. --teacher ViT-B-32 --pretrained openai "
    "(MODEL.DISTILL.TEACHER in a config, with a student distilled from it; see MODEL_ZOO.md)"
)
_FILLER = frozenset({"a", "an", "the", "of", "one"})  # words of a name that name nothing
_warned: set = set()


@dataclass(frozen=True)
class TrainingWorld:
    """A teacher's narrow training world: `label` names the teacher in messages, `domain` says what it saw,
    `classes` and `attributes` are the words of its captions."""

    label: str
    domain: str
    classes: tuple[str, ...]
    attributes: tuple[str, ...] = ()

    @property
    def words(self) -> frozenset[str]:
        return frozenset(w for n in (*self.classes, *self.attributes) for w in _words(n))

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names with a word this teacher never saw (a name of filler words only counts as unknown)."""
        known = self.words
        out = []
        for n in names:
            ws = [w for w in _words(n) if w not in _FILLER]
            if not ws or any(w not in known for w in ws):
                out.append(n)
        return out

    def names_message(self, unknown: Sequence[str]) -> str:
        shown = ", ".join(repr(n) for n in unknown[:6]) + (
            f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        )
        verb, them = ("is", "it") if len(unknown) == 1 else ("are", "them")
        return (
            f"{self.label} was trained only on {self.domain} ({', '.join(self.classes)}); {shown} {verb} outside "
            f"its vocabulary: its scores for {them} mean nothing. {REAL_TEACHER}"
        )

    def images_message(self, example: str) -> str:
        return (
            f"{self.label} was trained only on {self.domain} and images of that synthetic world; {example} is not "
            f"one of them: embeddings and detections of such images from it (or from a student distilled from it) "
            f"mean nothing. {REAL_TEACHER}"
        )


def _words(name: str) -> list[str]:
    return re.findall(r"[a-z]+", name.lower())


def synthetic_world(label: str, world: str = "quickstart") -> TrainingWorld:
    """The vocabulary of a synthetic world ("quickstart" or "methods", distill.data.synthetic) as a teacher's."""
    from ..data.synthetic import COLOUR_NAMES, SYNTHETIC_CATEGORIES

    if world == "methods":
        from ..data.synthetic_methods import METHODS_CATEGORIES

        names = tuple(c["name"] for c in METHODS_CATEGORIES)
        return TrainingWorld(label, "patterned synthetic shapes", names, COLOUR_NAMES)
    names = tuple(c["name"] for c in SYNTHETIC_CATEGORIES)
    return TrainingWorld(label, "synthetic shapes", names, COLOUR_NAMES)


def _checkpoint_world(weights: str) -> str:
    """The synthetic world a tiny teacher's checkpoint was trained on: a .safetensors file names it in its
    metadata; tools/train_teacher.py writes the weights beside their corpus (``corpus/meta.json`` names its
    world); a file moved elsewhere counts as the quickstart's."""
    if str(weights).endswith(".safetensors"):  # written with its world in the metadata
        return (_safetensors_metadata(weights) or {}).get("world", "quickstart")
    try:
        meta = json.loads((Path(weights).parent / "corpus" / "meta.json").read_text())
    except (OSError, ValueError):
        return "quickstart"
    return meta.get("world", "quickstart") if isinstance(meta, dict) else "quickstart"


def _safetensors_metadata(weights: str) -> dict | None:
    """A .safetensors file's metadata (empty without any), None for an unreadable file (the loader reports it)."""
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            return f.metadata() or {}
    except Exception:
        return None


def _derived_from(weights: str) -> dict | None:
    """The base teacher a derived teacher file was made from (a CLIPSelf teacher names it in its metadata's
    provenance: arch, pretrained, zoo_name or path), or None."""
    if not str(weights).endswith(".safetensors"):
        return None
    try:
        base = json.loads((_safetensors_metadata(weights) or {}).get("provenance", "{}")).get("base")
    except (ValueError, AttributeError):  # provenance that is not a json object: no base named
        return None
    return base if isinstance(base, dict) else None


def _zoo_world(name: str) -> TrainingWorld | None:
    from ..model_zoo import get_entry

    rec = get_entry(name).get("trained_on")
    if not rec:
        return None
    return TrainingWorld(name, rec["domain"], tuple(rec["classes"]), tuple(rec.get("attributes", ())))


def training_world(arch: str, pretrained: str | None) -> TrainingWorld | None:
    """The narrow world the teacher `arch` / `pretrained` (as a config or command line gives them) was trained
    on, without loading it; None for a real (or unknown) teacher and for random weights."""
    from ..model_zoo import has_entry
    from .teacher import MODEL_CONFIG_DIR

    if pretrained and pretrained.lower() == "none":
        return None  # random weights: create_teacher says so already
    for spec in (pretrained, arch):
        name = (spec or "").removeprefix("distill://")
        if name and has_entry(name):
            return _zoo_world(name)
    if not pretrained:
        return None
    base = _derived_from(pretrained)
    if base is not None:  # it knows what its base teacher knew (CLIPSelf adds no words)
        spec = base.get("zoo_name") or base.get("path") or base.get("pretrained")
        if spec and spec != pretrained:
            world = training_world(base.get("arch") or arch, spec)
            if world is not None:
                label = f"{arch} teacher ({Path(pretrained).name}, from {Path(spec).name})"
                return dataclasses.replace(world, label=label)
            return None
    if (MODEL_CONFIG_DIR / f"{arch}.json").is_file():
        return synthetic_world(f"{arch} teacher ({Path(pretrained).name})", _checkpoint_world(pretrained))
    return None


def _once(key, message: str) -> str:
    if key not in _warned:
        _warned.add(key)
        # the stream of now (a tool's stderr), not a logging handler's, which may hold a closed one
        print(f"warning: {message}", file=sys.stderr, flush=True)
    return message


def check_names(world: TrainingWorld | None, names: Iterable[str]) -> str | None:
    """Warn (once per process for the same names) when `names` have words outside the teacher's world; the
    message, or None when every name is inside it (or the teacher is a real one)."""
    if world is None:
        return None
    unknown = world.unknown(names)
    if not unknown:
        return None
    return _once(("names", world.label, tuple(unknown)), world.names_message(unknown))


def check_images(world: TrainingWorld | None, files: Iterable[str]) -> str | None:
    """Warn (once per process) when an image file is not from the synthetic world a narrow teacher knows."""
    if world is None:
        return None
    from ..data.synthetic import synthetic_root_of

    for f in itertools.islice(files, 1000):  # one dataset is one world: its first images tell
        if synthetic_root_of(f) is None:
            return _once(("images", world.label), world.images_message(str(f)))
    return None
