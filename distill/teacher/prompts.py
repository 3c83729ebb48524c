"""Prompt template sets, kept as data; the set used is recorded with every embedding file.

"vild": the 63 templates ViLD averages (CLIP's ensemble style), with "This is " prefixed to templates that
start with "a" / "the", names lower-cased, "_" → " " and "/" → " or ", as in ViLD's text-embedding code.
"simple": "a photo of a {}." "detic": "a {}" (Detic's single prompt).
"""

from __future__ import annotations

from typing import Sequence

from ..utils.errors import DistillInputError

_VILD = (
    "There is {article} {} in the scene.",
    "There is the {} in the scene.",
    "a photo of {article} {} in the scene.",
    "a photo of the {} in the scene.",
    "a photo of one {} in the scene.",
    "itap of {article} {}.",
    "itap of my {}.",
    "itap of the {}.",
    "a photo of {article} {}.",
    "a photo of my {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a good photo of {article} {}.",
    "a good photo of the {}.",
    "a bad photo of {article} {}.",
    "a bad photo of the {}.",
    "a photo of a nice {}.",
    "a photo of the nice {}.",
    "a photo of a cool {}.",
    "a photo of the cool {}.",
    "a photo of a weird {}.",
    "a photo of the weird {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of a clean {}.",
    "a photo of the clean {}.",
    "a photo of a dirty {}.",
    "a photo of the dirty {}.",
    "a bright photo of {article} {}.",
    "a bright photo of the {}.",
    "a dark photo of {article} {}.",
    "a dark photo of the {}.",
    "a photo of a hard to see {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of {article} {}.",
    "a low resolution photo of the {}.",
    "a cropped photo of {article} {}.",
    "a cropped photo of the {}.",
    "a close-up photo of {article} {}.",
    "a close-up photo of the {}.",
    "a jpeg corrupted photo of {article} {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of {article} {}.",
    "a blurry photo of the {}.",
    "a pixelated photo of {article} {}.",
    "a pixelated photo of the {}.",
    "a black and white photo of the {}.",
    "a black and white photo of {article} {}.",
    "a plastic {}.",
    "the plastic {}.",
    "a toy {}.",
    "the toy {}.",
    "a plushie {}.",
    "the plushie {}.",
    "a cartoon {}.",
    "the cartoon {}.",
    "an embroidered {}.",
    "the embroidered {}.",
    "a painting of the {}.",
    "a painting of a {}.",
)

TEMPLATE_SETS: dict[str, dict] = {
    "vild": {"templates": _VILD, "this_is": True},
    "simple": {"templates": ("a photo of a {}.",), "this_is": False},
    "detic": {"templates": ("a {}",), "this_is": False},
}


def processed_name(name: str) -> str:
    """ViLD's name clean-up: lower case, "_" → " ", "/" → " or "."""
    return name.replace("_", " ").replace("/", " or ").lower().strip()


def article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


def template_set(name: str) -> dict:
    if name not in TEMPLATE_SETS:
        raise DistillInputError(f"unknown template set {name!r}; choose one of {', '.join(TEMPLATE_SETS)}")
    return TEMPLATE_SETS[name]


def build_prompts(class_name: str, templates: str | Sequence[str] = "vild") -> list[str]:
    """All prompts of one class for a template set name (or an explicit list of "{}" templates)."""
    if isinstance(templates, str):
        spec = template_set(templates)
        temps, this_is = spec["templates"], spec["this_is"]
    else:
        temps, this_is = tuple(templates), False
    name = processed_name(class_name)
    if not name:
        raise DistillInputError(f"empty class name {class_name!r}")
    out = []
    for t in temps:
        text = t.format(name, article=article(name))
        if this_is and (text.startswith("a ") or text.startswith("an ") or text.startswith("the ")):
            text = "This is " + text
        out.append(text)
    return out
