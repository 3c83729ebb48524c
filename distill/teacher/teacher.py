"""The open_clip teacher: text, region and dense pixel embeddings, all L2-normalised."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..utils.checkpoint import torch_file_errors
from ..utils.cli import is_checkpoint_path
from ..utils.device import check_device
from ..utils.errors import DistillInputError
from .crops import crop_resize_normalize, scale_boxes
from .domain import TrainingWorld, check_names, training_world
from .learned_prompts import encode_learned, is_learned_prompts
from .pretrained import WeightsUnavailable, check_weights_available, hub_offline, offline, sync_offline_env
from .prompts import build_prompts
from .vit_dense import vit_pos_embed

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


def _register_model_configs() -> None:
    """Make the project's open_clip model configs (e.g. the tiny teacher) known to open_clip, once."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def _resolve_arch(arch: str) -> str:
    import open_clip

    models = open_clip.list_models()
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DistillInputError(f"unknown teacher architecture {arch!r}{hint} (see open_clip.list_models())")
    return arch


def _resolve_pretrained(arch: str, pretrained: str | None) -> tuple[str | None, str | None]:
    """(open_clip `pretrained` argument, model-zoo name if it came from the zoo)."""
    import open_clip

    if pretrained is None or pretrained == "" or pretrained.lower() == "none":
        return None, None
    if is_checkpoint_path(pretrained):
        if not os.path.isfile(pretrained):
            raise DistillInputError("teacher checkpoint not found", pretrained)
        return pretrained, None
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained in tags:
        return pretrained, None
    from ..model_zoo import get_checkpoint, has_entry

    name = pretrained.removeprefix("distill://")
    if has_entry(name):
        return str(get_checkpoint(name)), name
    raise DistillInputError(
        f"unknown pretrained tag {pretrained!r} for {arch}; open_clip knows "
        f"{', '.join(tags) or 'none'}; also accepted: a checkpoint path or a model-zoo name"
    )


# what open_clip says when a readable checkpoint belongs to another architecture
_MISFIT = ("size mismatch", "Missing key", "Unexpected key", "changed", "shape")


def create_teacher(
    arch: str, pretrained: str | None = None, device: str | torch.device = "cpu", precision: str = "fp32"
) -> "Teacher":
    """An open_clip teacher.

    Args:
        arch: an open_clip architecture (``ViT-B-32``, ``RN50``, the project's ``distill-tiny-vit``), or a
            model-zoo teacher name (then `pretrained` defaults to that entry's weights).
        pretrained: an open_clip pretrained tag (``openai``; downloaded by open_clip where there is network),
            a local checkpoint path, a model-zoo name (``distill://<name>`` or the bare name), or ``"none"``:
            random weights, said explicitly (rehearsals of a recipe at real shapes).
        precision: "fp32", "fp16" or "bf16".
    """
    sync_offline_env()  # before open_clip imports huggingface_hub
    import open_clip

    _register_model_configs()
    from ..model_zoo import get_entry, has_entry

    world = training_world(arch, pretrained)

    zoo_name = None
    if has_entry(arch.removeprefix("distill://")):
        entry = get_entry(arch.removeprefix("distill://"))
        if entry.get("kind") != "teacher":
            raise DistillInputError(f"model-zoo entry {arch!r} is a {entry.get('kind')}, not a teacher")
        zoo_name, arch = entry["name"], entry["arch"]
        pretrained = pretrained or zoo_name  # "none" keeps the zoo arch with random weights
    arch = _resolve_arch(arch)
    weights, zoo = _resolve_pretrained(arch, pretrained)
    zoo_name = zoo or zoo_name
    if weights is None:
        logger.warning("teacher %s has random weights (no pretrained tag or checkpoint given)", arch)
    check_device(str(device), "device")
    local = weights is not None and os.path.isfile(weights)
    source = None if local or weights is None else check_weights_available(arch, weights)
    with _loading(weights, local, source), _hub_parts(arch), _fixed_init(weights is None):
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=weights, precision=precision, device=device
            )
        except (AssertionError, RuntimeError) as e:
            text = str(e)
            if not local and text.startswith("Failed to download"):  # open_clip's words, network lost midway
                raise WeightsUnavailable(f"{arch}/{weights}: {_first_line(text)}") from None
            if not local or not any(k in text for k in _MISFIT):
                raise
            raise DistillInputError(
                f"teacher checkpoint does not fit architecture {arch} ({_first_line(text)}): "
                "the weights of another arch?",
                weights,
            ) from None
    model.eval()
    with _hub_parts(arch):
        tokenizer = open_clip.get_tokenizer(arch)
    if weights is None:
        zoo_name = pretrained = None
    return Teacher(
        model,
        tokenizer,
        preprocess,
        arch=arch,
        pretrained=zoo_name or pretrained,
        precision=precision,
        world=world,
    )


@contextlib.contextmanager
def _fixed_init(random_weights: bool):
    """Random weights are the same in every process (a rehearsal trains and evaluates one random tower; a frozen
    tower's fingerprint must match), without touching the caller's random state."""
    if not random_weights:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _first_line(text: str, limit: int = 300) -> str:
    return (text.strip().splitlines() or ["?"])[0][:limit]


@contextlib.contextmanager
def _hub_parts(arch: str):
    """Architectures whose tokenizer or text tower come from Hugging Face (transformers, hub files): a missing
    package, or a file missing offline, is one line."""
    try:
        yield
    except ImportError as e:
        name = e.name or "?"
        raise DistillInputError(
            f"teacher {arch} needs the Python package {name!r} (pip install {name})"
        ) from None
    except OSError as e:
        if not offline() or getattr(e, "filename", None):  # a local file: its own error
            raise
        raise WeightsUnavailable(
            f"teacher {arch}: a file it needs from the Hugging Face hub is not in the cache and offline mode is "
            f"on (DISTILL_OFFLINE / HF_HUB_OFFLINE): {_first_line(str(e), 200)}"
        ) from None


def _loading(weights: str | None, local: bool, source):
    """Errors of a local checkpoint as one line; a cached download read with the hub offline (no update check,
    no retries without network)."""
    if local:
        return torch_file_errors(weights, "teacher checkpoint")
    if source is not None and source.cached:
        return hub_offline()
    return contextlib.nullcontext()


class Teacher:
    """A frozen open_clip model with the three encoders the students learn from."""

    def __init__(
        self,
        model,
        tokenizer,
        preprocess,
        arch: str,
        pretrained: str | None,
        precision: str = "fp32",
        world: TrainingWorld | None = None,
    ):
        self.model = model
        self.world = world  # a narrow training world (the tiny teachers'): words and images outside it warn
        self.tokenizer = tokenizer
        self.preprocess = preprocess  # open_clip's PIL preprocessing (the per-box reference path)
        self.arch = arch
        self.pretrained = pretrained
        self.precision = precision
        for p in model.parameters():
            p.requires_grad_(False)
        visual = model.visual
        size = getattr(visual, "image_size", 224)
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(
            float(x) for x in getattr(visual, "image_mean", (0.48145466, 0.4578275, 0.40821073))
        )
        self.std = tuple(float(x) for x in getattr(visual, "image_std", (0.26862954, 0.26130258, 0.27577711)))
        self.dim = int(
            model.text_projection.shape[1] if model.text_projection is not None else model.visual.output_dim
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.visual.parameters()).dtype

    def provenance(self) -> dict:
        return {
            "teacher": {
                "arch": self.arch,
                "pretrained": self.pretrained,
                "precision": self.precision,
                "input_size": self.input_size,
            }
        }

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(
        self, class_names: Sequence[str], templates: str | Sequence[str] = "vild", batch_size: int = 512
    ) -> torch.Tensor:
        """(C,) names → (C, D): each prompt embedded and normalised, averaged per class, re-normalised.

        `templates`: a template-set name, a list of "{}" templates, or a learned-prompt file (.safetensors).
        """
        names = list(class_names)
        if not names:
            raise DistillInputError("empty vocabulary: no class names")
        check_names(self.world, names)
        if is_learned_prompts(templates):
            return encode_learned(self, names, templates)
        prompts = [build_prompts(n, templates) for n in names]
        flat = [p for ps in prompts for p in ps]
        embs = []
        for i in range(0, len(flat), batch_size):
            tokens = self.tokenizer(flat[i : i + batch_size]).to(self.device)
            embs.append(F.normalize(self._encode_tokens(tokens).float(), dim=-1))
        per_prompt = torch.cat(embs).view(len(names), len(prompts[0]), -1)
        return F.normalize(per_prompt.mean(1), dim=-1)

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 77) tokens → (B, D) unnormalised, like open_clip's CLIP.encode_text. The text tower is causal and
        pools at the end-of-text token, so the padding after the longest prompt changes nothing: it is cut off
        (a 1,203-class vocabulary's prompts are ~10-20 tokens, a quarter of the context or less)."""
        import open_clip

        m = self.model
        if type(m) is not open_clip.CLIP or m.text_pool_type != "argmax" or m.attn_mask is None:
            return m.encode_text(tokens)
        n = int(tokens.argmax(-1).max()) + 1  # end-of-text has the largest token id
        t = tokens[:, :n]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(t).to(cast) + m.positional_embedding[:n].to(cast)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:n, :n]))
        x = x[torch.arange(x.shape[0], device=x.device), t.argmax(-1)]
        proj = m.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj

    def encode_text_with_vectors(
        self, tokens: torch.Tensor, vectors: torch.Tensor, start: int = 1
    ) -> torch.Tensor:
        """The text tower over `tokens` (C, L) with positions start .. start + M - 1 replaced by `vectors` (M, W)
        or (C, M, W) (learned prompts' context, BARON's pseudo-words): (C, D) unnormalised, with gradients to
        the vectors (`distill.teacher.text_tower.encode_with_vectors`)."""
        from .text_tower import encode_with_vectors

        return encode_with_vectors(self.model, tokens.to(self.device), vectors, start)

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def encode_image(self, crops: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(N, 3, S, S) normalised crops at the input size → (N, D) L2-normalised."""
        out = []
        for i in range(0, crops.shape[0], batch_size):
            x = crops[i : i + batch_size].to(self.device, self.dtype)
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1))
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)

    def crop_regions(
        self, image: torch.Tensor, boxes: torch.Tensor, scale: float = 1.0, geometry: str = "center"
    ) -> torch.Tensor:
        """(3, H, W) image and (N, 4) XYXY boxes → (N, 3, S, S) normalised crops of the boxes grown by `scale`."""
        return crop_resize_normalize(
            image, scale_boxes(boxes.float(), scale), self.input_size, self.mean, self.std, geometry=geometry
        )

    @torch.no_grad()
    def encode_regions(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        boxes: Sequence[torch.Tensor],
        scales: Sequence[float] = (1.0, 1.5),
        geometry: str = "center",
        batch_size: int = 256,
    ) -> torch.Tensor:
        """Region embeddings, ViLD-style.

        Args:
            images: B images, each (3, H, W) RGB, uint8 or float in [0, 1].
            boxes: B tensors (N_i, 4) XYXY in pixels; boxes are checked by the caller (see `check_boxes`).
            scales: crop scales; each box's per-scale embeddings are normalised, summed and re-normalised.
        Returns:
            (sum N_i, D) L2-normalised.
        """
        if len(images) != len(boxes):
            raise DistillInputError(f"{len(images)} images but {len(boxes)} box lists")
        total = None
        for s in scales:
            crops = [
                self.crop_regions(img.to(self.device), b.to(self.device), s, geometry)
                for img, b in zip(images, boxes)
            ]
            emb = self.encode_image(torch.cat(crops), batch_size) if crops else torch.zeros(0, self.dim)
            total = emb if total is None else total + emb
        return F.normalize(total, dim=-1)

    # ------------------------------------------------------------------ dense
    @torch.no_grad()
    def encode_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """MaskCLIP-style dense embeddings.

        ViT: the last block's value path (ln_1 → value projection → out_proj), without the query-key
        attention and the MLP, through ln_post and the projection, for every patch token.
        ResNet (ModifiedResNet): the attention pool's value and output projections on each position.

        Args:
            images: (B, 3, H, W) float in [0, 1] (or uint8); resized to multiples of the patch size.
        Returns:
            (B, D, h, w) L2-normalised over D (h = H / patch for ViT, H / 32 for ResNet).
        """
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        x = ((images - mean) / std).to(self.device, self.dtype)
        visual = self.model.visual
        if hasattr(visual, "transformer") and hasattr(visual, "conv1"):
            dense = self._dense_vit(visual, x)
        elif hasattr(visual, "attnpool") and hasattr(visual, "stem"):
            dense = self._dense_resnet(visual, x)
        else:
            raise DistillInputError(
                f"encode_pixels supports open_clip ViT and ModifiedResNet teachers, "
                f"not {type(visual).__name__} ({self.arch})"
            )
        return F.normalize(dense.float(), dim=1)

    @torch.no_grad()
    def encode_image_and_dense(
        self, crops: torch.Tensor, cls_residual: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embeddings and dense maps of the same crops from one trunk forward (BARON's teacher: a bag's
        embedding and its regions pooled from the bag crop's dense map).

        Args:
            crops: (N, 3, S, S) normalised crops at the input size (as for `encode_image`).
        Returns:
            ((N, D) L2-normalised, == `encode_image(crops)`; (N, D, h, w) L2-normalised over D, == the dense
            maps `encode_pixels` gives for the same crops: the last block's value path). `cls_residual`: for a
            ViT, BARON's dense tokens instead (`_vit_value_head`); a ResNet's are the same either way.
        """
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, self.input_size, self.input_size):
            raise DistillInputError(
                f"crops must be (N, 3, {self.input_size}, {self.input_size}), got {tuple(crops.shape)}"
            )
        x = crops.to(self.device, self.dtype)
        visual = self.model.visual
        if hasattr(visual, "transformer") and hasattr(visual, "conv1"):
            t, h, w = self._vit_trunk(visual, x)
            batch_first = getattr(visual.transformer, "batch_first", True)
            y = visual.transformer.resblocks[-1](t if batch_first else t.transpose(0, 1))
            pooled, _ = visual._pool(y if batch_first else y.transpose(0, 1))  # ln_post and CLS, as open_clip
            emb = pooled @ visual.proj if visual.proj is not None else pooled
            dense = self._vit_value_head(visual, t, h, w, cls_residual)
        elif hasattr(visual, "attnpool") and hasattr(visual, "stem"):
            f = self._resnet_trunk(visual, x)
            emb, dense = visual.attnpool(f), self._resnet_value_head(visual, f)
        else:
            raise DistillInputError(
                f"encode_pixels supports open_clip ViT and ModifiedResNet teachers, "
                f"not {type(visual).__name__} ({self.arch})"
            )
        return F.normalize(emb.float(), dim=-1), F.normalize(dense.float(), dim=1)

    def _dense_vit(self, visual, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self._vit_trunk(visual, x)
        return self._vit_value_head(visual, x, h, w)

    def _vit_trunk(self, visual, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B, 3, H, W) normalised → ((B, 1 + h*w, width) batch-first input of the last block, h, w); the image
        is resized to multiples of the patch, the positional embeddings to the (h, w) grid."""
        if getattr(visual, "attn_pool", None) is not None:
            raise DistillInputError(f"encode_pixels does not support attention-pooled ViTs ({self.arch})")
        p = visual.patch_size[0] if isinstance(visual.patch_size, (tuple, list)) else visual.patch_size
        h, w = max(1, round(x.shape[2] / p)), max(1, round(x.shape[3] / p))
        if (h * p, w * p) != tuple(x.shape[2:]):
            x = F.interpolate(x, size=(h * p, w * p), mode="bilinear", align_corners=False)
        tokens = visual.conv1(x).flatten(2).transpose(1, 2)  # (B, h*w, width)
        cls = visual.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        x = torch.cat([cls, tokens], 1) + vit_pos_embed(visual, h, w).to(tokens.dtype)
        x = visual.ln_pre(x)
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        for blk in visual.transformer.resblocks[:-1]:
            x = blk(x)
        x = x if batch_first else x.transpose(0, 1)
        return x, h, w

    @staticmethod
    def _vit_value_head(visual, x: torch.Tensor, h: int, w: int, cls_residual: bool = False) -> torch.Tensor:
        """The last block's value path (ln_1 → value projection → out_proj, no attention, no MLP), ln_post and
        the projection per patch token: (B, 1 + h*w, width) → (B, D, h, w) unnormalised. With `cls_residual`
        (BARON's teacher tokens, ovdet `ResidualAttentionBlock` with return_tokens): the class token's input
        added as the residual, then the block's MLP."""
        last = visual.transformer.resblocks[-1]
        attn = last.attn
        width = x.shape[-1]
        v = F.linear(last.ln_1(x), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])
        v = last.ls_1(attn.out_proj(v))
        if cls_residual:
            v = x[:, :1] + v
            v = v + last.ls_2(last.mlp(last.ln_2(v)))
        v = visual.ln_post(v[:, 1:]) @ visual.proj  # (B, h*w, D)
        return v.transpose(1, 2).reshape(v.shape[0], -1, h, w)

    @staticmethod
    def _dense_resnet(visual, x: torch.Tensor) -> torch.Tensor:
        return Teacher._resnet_value_head(visual, Teacher._resnet_trunk(visual, x))

    @staticmethod
    def _resnet_trunk(visual, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised → (B, C, H / 32, W / 32): the stem and the four stages."""
        f = visual.stem(x)
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            f = layer(f)
        return f

    @staticmethod
    def _resnet_value_head(visual, f: torch.Tensor) -> torch.Tensor:
        """The attention pool's value and output projections per position: (B, C, h, w) → (B, D, h, w)."""
        b, c, h, w = f.shape
        pool = visual.attnpool
        v = pool.c_proj(pool.v_proj(f.flatten(2).transpose(1, 2)))  # (B, h*w, D)
        return v.transpose(1, 2).reshape(b, -1, h, w)


def check_boxes(boxes: torch.Tensor, height: int, width: int, min_size: float = 1.0) -> torch.Tensor:
    """(N, 4) XYXY → bool (N,) of usable boxes: finite, at least `min_size` wide and high, overlapping the image."""
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise DistillInputError(f"boxes must be (N, 4) XYXY, got shape {tuple(boxes.shape)}")
    finite = torch.isfinite(boxes).all(1)
    b = torch.nan_to_num(boxes)
    big = ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)
    inside = (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < width) & (b[:, 1] < height)
    return finite & big & inside
