"""Learned text classifiers on the frozen open_clip text tower: prompts (CoOp, DetPro) and CLIP-Adapter.

A learned-prompt file is a safetensors file of tensors plus a json sidecar (``<file>.json``) of provenance:
teacher (arch, pretrained, a hash of its text tower), method, M, initialisation, training data, and the sha256
of the tensor file. Anywhere a template-set name is accepted, a path to such a file is too
(`Teacher.encode_text` hands it to `encode_learned`), and loading checks it against the teacher in use.

- CoOp / DetPro: ``ctx`` (K, M, W) class-shared or (K, C, M, W) class-specific context vectors in the token
  embedding space, replacing the M tokens after the start token of ``"<init words> {name}."``. K > 1 are
  DetPro's context-graded prompts (one per IoU bin), ensembled: class embedding = normalised mean of the K.
- CLIP-Adapter (text side): class embeddings t (C, D) of a hand template set go through a residual
  bottleneck MLP: normalise(alpha * mlp(t) + (1 - alpha) * t).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.errors import DistillInputError
from ..utils.io import atomic_write_bytes, atomic_write_json, read_json
from .prompt_config import SUFFIX  # noqa: F401  (re-exported)
from .prompts import processed_name
from .text_tower import encode_with_context, text_tower

FORMAT = "distill.learned_prompts/1"
METHODS = ("coop", "detpro", "clip-adapter")


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


def is_learned_prompts(spec) -> bool:
    """True for a string naming a learned-prompt file (by suffix, or an existing file with our sidecar)."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    s = str(spec)
    return s.endswith(SUFFIX) or (os.path.isfile(s) and sidecar_path(s).is_file())


# ------------------------------------------------------------------ the text tower with context vectors
def text_tower_sha256(model) -> str:
    """Hash of the text tower's weights: a learned prompt only means something for the tower it was fit to."""
    if hasattr(model, "text"):
        items = model.text.state_dict().items()
    else:
        items = ((n, p) for n, p in model.state_dict().items() if not n.startswith(("visual.", "logit_")))
    h = hashlib.sha256()
    for name, p in sorted(items):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def context_tokens(tokenizer, init: str, m: int) -> tuple[str, int]:
    """(context words, M): the init words (M = their token count), or M placeholder words "X" if no init."""
    if init:
        n = int((tokenizer([init])[0] != 0).sum()) - 2  # minus start and end tokens
        if m and m != n:
            raise DistillInputError(f"init {init!r} is {n} tokens, not M={m}; give M={n} or no init")
        return init, n
    if m < 1:
        raise DistillInputError("M (number of context vectors) must be >= 1")
    return " ".join(["X"] * m), m


def prompt_tokens(tokenizer, words: str, class_names: Sequence[str]) -> torch.Tensor:
    """(C, L) token ids of ``"<words> <name>."`` per class."""
    return tokenizer([f"{words} {processed_name(n)}." for n in class_names])


class PromptLearner(nn.Module):
    """K prompts of M context vectors (class-shared (K, M, W) or class-specific (K, C, M, W))."""

    def __init__(
        self,
        teacher,
        class_names: Sequence[str],
        m: int = 0,
        init: str = "a photo of a",
        num_prompts: int = 1,
        class_specific: bool = False,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.words, self.m = context_tokens(teacher.tokenizer, init, m)
        self.class_names = list(class_names)
        tower = text_tower(teacher.model)
        with torch.no_grad():
            if init:
                ids = teacher.tokenizer([self.words])[0, 1 : 1 + self.m].to(teacher.device)
                base = tower.token_embedding(ids).float()  # (M, W)
            else:
                base = torch.randn(self.m, tower.token_embedding.weight.shape[1]) * init_std
        shape = (
            (num_prompts, len(self.class_names), self.m, base.shape[-1])
            if class_specific
            else (num_prompts, self.m, base.shape[-1])
        )
        self.ctx = nn.Parameter(base.expand(*shape).clone())
        self.register_buffer(
            "tokens", prompt_tokens(teacher.tokenizer, self.words, self.class_names), persistent=False
        )

    def forward(self, model) -> torch.Tensor:
        """→ (K, C, D) L2-normalised class embeddings, one set per prompt."""
        return torch.stack(
            [F.normalize(encode_with_context(model, self.tokens, c).float(), dim=-1) for c in self.ctx]
        )


class TextAdapter(nn.Module):
    """CLIP-Adapter on class embeddings: (C, D) → normalise(alpha * mlp(t) + (1 - alpha) * t)."""

    def __init__(self, dim: int, reduction: int = 4, alpha: float = 0.2):
        super().__init__()
        self.alpha = alpha
        self.fc1 = nn.Linear(dim, max(1, dim // reduction), bias=False)
        self.fc2 = nn.Linear(max(1, dim // reduction), dim, bias=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.fc2(F.relu(self.fc1(t))))
        return F.normalize(self.alpha * a + (1 - self.alpha) * t, dim=-1)


def ensemble(per_prompt: torch.Tensor) -> torch.Tensor:
    """(K, C, D) → (C, D): DetPro's ensemble of context-graded prompts."""
    return F.normalize(F.normalize(per_prompt, dim=-1).mean(0), dim=-1)


# ------------------------------------------------------------------ files
def teacher_record(teacher) -> dict:
    return {**teacher.provenance()["teacher"], "text_tower_sha256": text_tower_sha256(teacher.model)}


def save_learned(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write the safetensors file and its sidecar atomically; `meta` needs method, teacher and the rest."""
    from safetensors.torch import save

    path = Path(path)
    if not str(path).endswith(SUFFIX):
        raise DistillInputError(f"a learned-prompt file ends in {SUFFIX}", path)
    data = save({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    atomic_write_json(
        sidecar_path(path), {"format": FORMAT, **meta, "sha256": hashlib.sha256(data).hexdigest()}, indent=1
    )
    return path


def load_learned(path: str | os.PathLike, teacher=None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, sidecar) after checking the hash, and, given a teacher, that it is the one the file was fit to."""
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise DistillInputError("learned-prompt file not found", path)
    meta = read_json(sidecar_path(path), what="learned-prompt sidecar")
    if meta.get("format") != FORMAT or meta.get("method") not in METHODS:
        raise DistillInputError(f"not a {FORMAT} file of one of {', '.join(METHODS)}", sidecar_path(path))
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise DistillInputError("file does not match the sha256 in its sidecar (corrupt or replaced)", path)
    tensors = load(data)
    if teacher is not None:
        want, have = meta.get("teacher", {}), teacher_record(teacher)
        if (want.get("arch"), want.get("text_tower_sha256")) != (have["arch"], have["text_tower_sha256"]):
            raise DistillInputError(
                f"learned for teacher {want.get('arch')} ({want.get('pretrained')}), not this "
                f"teacher {have['arch']} ({have['pretrained']}): text-tower weights differ",
                path,
            )
    return tensors, meta


def encode_learned(teacher, class_names: Sequence[str], path: str | os.PathLike) -> torch.Tensor:
    """(C,) names → (C, D) L2-normalised class embeddings from a learned-prompt file, for this teacher."""
    tensors, meta = load_learned(path, teacher)
    names = list(class_names)
    with torch.no_grad():
        if meta["method"] == "clip-adapter":
            t = teacher.encode_text(names, meta["base_templates"])
            adapter = TextAdapter(t.shape[1], meta["reduction"], meta["alpha"])
            adapter.load_state_dict({k: v for k, v in tensors.items()})
            return adapter.to(t.device)(t)
        ctx = tensors["ctx"].to(teacher.device)
        if ctx.ndim == 4:  # class-specific: only for the classes it was trained on, in any order
            known = {n: i for i, n in enumerate(meta["class_names"])}
            missing = [n for n in names if n not in known]
            if missing:
                raise DistillInputError(f"class-specific prompts have no context for {missing[:3]}", path)
            ctx = ctx[:, [known[n] for n in names]]
        tokens = prompt_tokens(teacher.tokenizer, meta["words"], names).to(teacher.device)
        per = torch.stack(
            [F.normalize(encode_with_context(teacher.model, tokens, c).float(), dim=-1) for c in ctx]
        )
    return ensemble(per)


def describe(path: str | os.PathLike) -> dict:
    """Provenance to copy into a class-embedding sidecar made from this file."""
    meta = read_json(sidecar_path(path), what="learned-prompt sidecar")
    return {
        "learned_prompts": {
            k: meta.get(k)
            for k in ("method", "m", "num_prompts", "class_specific", "sha256", "training_data")
        }
    }
