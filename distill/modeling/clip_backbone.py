"""The teacher's image tower as a frozen detector backbone (F-VLM, F-ViT), and the VLM's region embeddings from the
same forward.

`CLIPTower` turns the student's input (normalised with MODEL.PIXEL_MEAN / PIXEL_STD, in INPUT.FORMAT's channel
order) into the tower's own input (RGB, the teacher's mean and std), runs the tower without gradients and with its
norms in eval mode, and returns four maps at strides 4 / 8 / 16 / 32 for a trainable FPN:

- an open_clip ModifiedResNet: its stages layer1-layer4 (C2-C5);
- an open_clip VisionTransformer: the tokens after four blocks (F-ViT: blocks 3, 5, 7, 11 of 12; the last one
  run without its attention), brought from the patch stride to 4 / 8 / 16 / 32 by trainable transposed
  convolutions and max pooling (a simple feature pyramid, as ViTDet and F-ViT); positional embeddings
  interpolated to the input's token grid.

`VLMRegions` (the same forward's last-stage map, with the tower's own pooling) embeds boxes in the teacher's
space: a ResNet's C5 RoI-aligned to the attention pool's grid and pooled by it (F-VLM), a ViT's dense value-path
features (the last block without its attention, then ln_post and the projection) RoI-aligned to 1 x 1 (F-ViT).

Followed: google-research/google-research fvlm/modeling (clip_models.py, task_heads.py) and wusize/CLIPSelf
F-ViT/models (evaclip_vit.py, fvit_head.py); the choices made here are on docs/methods/fvlm.md.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..teacher.vit_dense import patch_size, vit_dense
from ..utils.errors import DistillInputError

STRIDES = (4, 8, 16, 32)
CLIP_BACKBONE = "build_clip_fpn_backbone"  # MODEL.BACKBONE.NAME of the frozen-tower backbone (both backends)
VLM_KEY = "vlm"  # the backbone's output holding the tower's `VLMRegions` beside the FPN levels
FINGERPRINT_KEY = "teacher_fingerprint"


def tower_kind(visual: nn.Module) -> str:
    """ "resnet" or "vit" for the open_clip towers a backbone can be made of; one clear line for the others."""
    if hasattr(visual, "attnpool") and hasattr(visual, "stem") and hasattr(visual, "layer4"):
        return "resnet"
    if hasattr(visual, "transformer") and hasattr(visual, "conv1") and hasattr(visual, "class_embedding"):
        if getattr(visual, "attn_pool", None) is not None:
            raise DistillInputError(
                "a ViT teacher with an attention-pooled head cannot serve as the detector's backbone"
            )
        return "vit"
    raise DistillInputError(
        f"the teacher's image tower ({type(visual).__name__}) cannot serve as the detector's backbone: "
        "an open_clip ModifiedResNet (RN50, ...) or VisionTransformer (ViT-B-16, ...) is needed"
    )


def default_vit_blocks(depth: int) -> list[int]:
    """The blocks whose outputs make the pyramid: F-ViT's 3, 5, 7, 11 for 12 blocks, 6, 10, 14, 23 for 24; else
    evenly spaced, the last block last."""
    if depth == 12:
        return [3, 5, 7, 11]
    if depth == 24:
        return [6, 10, 14, 23]
    if depth < 4:
        raise DistillInputError(f"a ViT backbone needs at least 4 blocks, the teacher has {depth}")
    return [round(depth * k / 4) - 1 for k in (1, 2, 3, 4)]


def attention_pool(pool, x: torch.Tensor) -> torch.Tensor:
    """open_clip's AttentionPool2d (CLIP's ResNet head) with the mean token as the only query: (N, C, g, g) →
    (N, D), the same values as `pool(x)`, which also attends from every position and keeps the first (half of its
    work, on 1,000 proposals an image)."""
    x = x.flatten(2).permute(2, 0, 1)  # (g*g, N, C)
    x = torch.cat([x.mean(0, keepdim=True), x], 0) + pool.positional_embedding[:, None, :].to(x.dtype)
    out, _ = F.multi_head_attention_forward(
        query=x[:1],
        key=x,
        value=x,
        embed_dim_to_check=x.shape[-1],
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    return out[0]


def _tower_fingerprint(visual: nn.Module) -> str:
    """A short hash of the tower's weights (shapes, sums and a strided sample of each tensor): tells one teacher's
    tower from another's without reading every byte twice."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(visual.state_dict().items()):
            flat = t.detach().reshape(-1).float().cpu()
            step = max(1, flat.numel() // 256)
            h.update(f"{name}:{tuple(t.shape)}:{float(flat.double().sum()):.6e}".encode())
            h.update(flat[::step][:256].numpy().tobytes())
    return h.hexdigest()[:16]


class VLMRegions:
    """The VLM's region embeddings of one forward: `(boxes) → (N, D)` L2-normalised, in the teacher's space.

    Args:
        tower: the `CLIPTower` that made `dense`.
        dense: ResNet: (B, C5, h, w) its last stage; ViT: (B, D, h, w) its dense value-path embeddings.
    """

    def __init__(self, tower: "CLIPTower", dense: torch.Tensor):
        self.tower = tower
        self.dense = dense

    def __call__(self, rois) -> torch.Tensor:
        """rois: per image (N_i, 4) XYXY in input pixels, or (boxes (P, 4), image index (P,)) of a whole batch
        → (sum N_i or P, D)."""
        if isinstance(rois, tuple):
            boxes, image = rois
        else:
            boxes = torch.cat(list(rois))
            image = torch.cat([torch.full((len(b),), i, device=boxes.device) for i, b in enumerate(rois)])
        return self.tower.region_embeddings(self.dense, boxes, image)


class CLIPTower(nn.Module):
    """The frozen image tower of an open_clip teacher as a four-level backbone (see the module docstring).

    Args:
        visual: the teacher's `model.visual` (frozen here).
        image_mean, image_std: the tower's input normalisation (0-1 RGB).
        pixel_mean, pixel_std: the student's (0-255, in `input_format`'s channel order).
        input_format: "RGB" or "BGR", the student's channel order.
        vit_blocks: for a ViT, the four blocks whose outputs make the pyramid (None: `default_vit_blocks`).
        identity: what the tower was made from (teacher arch, pretrained), recorded in checkpoints.
    Forward: (B, 3, H, W) student-normalised, H and W multiples of 32 → (list of 4 maps (B, C_k, H/s, W/s) at
    strides 4 / 8 / 16 / 32, `VLMRegions` of the same forward).
    """

    def __init__(
        self,
        visual: nn.Module,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        vit_blocks: Sequence[int] | None = None,
        identity: dict | None = None,
    ):
        super().__init__()
        self.kind = tower_kind(visual)
        if input_format not in ("RGB", "BGR"):
            raise DistillInputError(f"INPUT.FORMAT must be RGB or BGR, got {input_format!r}")
        # not a submodule: no parameters() (nothing to optimise or synchronise), no state_dict (a checkpoint
        # holds the trained parts; the tower comes from the teacher, checked by its fingerprint); moved by _apply
        object.__setattr__(self, "visual", visual)
        for p in visual.parameters():
            p.requires_grad_(False)
        visual.eval()
        # x_tower[c] = (x_student[src(c)] * std_s + mean_s) / 255 - mean_t[c]) / std_t[c], one affine per channel
        order = [0, 1, 2] if input_format == "RGB" else [2, 1, 0]
        ms = torch.tensor(pixel_mean, dtype=torch.float32)[order]
        ss = torch.tensor(pixel_std, dtype=torch.float32)[order]
        mt, st = torch.tensor(image_mean), torch.tensor(image_std)
        self.register_buffer("in_scale", (ss / 255 / st).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((ms / 255 - mt) / st).view(1, 3, 1, 1), persistent=False)
        self.bgr = input_format == "BGR"
        self.identity = dict(identity or {})
        self._fingerprint: str | None = None
        if self.kind == "resnet":
            c5 = visual.layer4[-1].conv3.out_channels if hasattr(visual.layer4[-1], "conv3") else None
            chans = [visual.layer1[-1].conv3.out_channels, visual.layer2[-1].conv3.out_channels]
            chans += [visual.layer3[-1].conv3.out_channels, c5]
            self.out_channels = [int(c) for c in chans]
            pos = visual.attnpool.positional_embedding
            self.pool_grid = int(round((pos.shape[0] - 1) ** 0.5))
            self.vit_blocks: list[int] = []
        else:
            depth = len(visual.transformer.resblocks)
            blocks = list(vit_blocks) if vit_blocks else default_vit_blocks(depth)
            if len(blocks) != 4 or sorted(set(blocks)) != blocks or blocks[0] < 0 or blocks[-1] != depth - 1:
                raise DistillInputError(
                    f"ViT backbone blocks must be 4 increasing indices ending at the last block ({depth - 1}), "
                    f"got {blocks}"
                )
            self.vit_blocks = blocks
            width = int(visual.conv1.out_channels)
            self.tower_patch = patch_size(visual)
            # the token stride: the patch, or 16 for a patch that is not a power of two (ViT-L/14: the input is
            # resized by 14/16 first, so its tokens sit on the stride-16 grid the pooler expects)
            self.patch = self.tower_patch if self.tower_patch in (4, 8, 16, 32) else 16
            if self.tower_patch > 32:
                raise DistillInputError(f"a ViT backbone needs a patch size up to 32, not {self.tower_patch}")
            self.rescale = nn.ModuleList(_rescale(width, self.patch, s) for s in STRIDES)  # trainable
            self.out_channels = [width] * 4
            self.pool_grid = 1

    # ---------------------------------------------------------------- frozen parts stay frozen
    def train(self, mode: bool = True):
        super().train(mode)
        self.visual.eval()  # norms in eval, no dropout: the teacher is not trained
        return self

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.visual._apply(fn, *args, **kwargs)
        return out

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _tower_fingerprint(self.visual)
        return self._fingerprint

    # ---------------------------------------------------------------- forward
    def to_tower_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        return (x * self.in_scale + self.in_shift).to(next(self.visual.parameters()).dtype)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], VLMRegions]:
        with torch.no_grad():
            x = self.to_tower_input(x)
            if self.kind == "resnet":
                feats, dense = self._resnet(x)
            else:
                tokens, dense = self._vit(x)
        if self.kind == "vit":
            feats = [m(t.float()) for m, t in zip(self.rescale, tokens)]
        return [f.float() for f in feats], VLMRegions(self, dense)

    def _resnet(self, x: torch.Tensor):
        v = self.visual
        f = v.stem(x)
        feats = []
        for layer in (v.layer1, v.layer2, v.layer3, v.layer4):
            f = layer(f)
            feats.append(f)
        return feats, f

    def _vit(self, x: torch.Tensor):
        p = self.patch
        _, _, hh, ww = x.shape
        h, w = hh // p, ww // p
        if (h * p, w * p) != (hh, ww):
            raise DistillInputError(f"a ViT backbone's input must be a multiple of {p}, got {hh}x{ww}")
        if self.tower_patch != p:
            x = F.interpolate(x, size=(h * self.tower_patch, w * self.tower_patch), mode="bilinear")
        return vit_dense(self.visual, x, self.vit_blocks)

    # ---------------------------------------------------------------- the VLM's region embeddings
    def region_embeddings(
        self, dense: torch.Tensor, boxes: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor:
        """dense: this tower's `VLMRegions.dense`; boxes (P, 4) XYXY in input pixels of images `image` (P,) →
        (P, D) L2-normalised."""
        rois = torch.cat([image[:, None].to(dense.dtype), boxes.to(dense.dtype)], 1)
        with torch.no_grad():
            if self.kind == "resnet":
                # F-VLM: the proposals on C5, one bilinear sample per cell of the attention pool's own grid;
                # half-pixel aligned, so the whole image at the tower's size is exactly CLIP's image path
                x = roi_align(dense, rois, self.pool_grid, 1 / 32, sampling_ratio=1, aligned=True)
                emb = attention_pool(self.visual.attnpool, x.to(next(self.visual.parameters()).dtype))
            else:  # F-ViT: 1 x 1 RoIAlign of the normalised dense map, adaptive sampling
                emb = roi_align(dense, rois, 1, 1 / self.patch, sampling_ratio=0, aligned=True).flatten(1)
        return F.normalize(emb.float(), dim=-1)

    # ---------------------------------------------------------------- checkpoints: the tower's fingerprint
    # A fixed-size uint8 tensor (checkpointers keep tensors only, and drop ones whose shape changed).
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + FINGERPRINT_KEY] = torch.tensor(
            list(bytes.fromhex(self.fingerprint)), dtype=torch.uint8
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.pop(prefix + FINGERPRINT_KEY, None)
        if saved is not None and bytes(saved.cpu().tolist()).hex() != self.fingerprint:
            who = self.identity
            raise DistillInputError(
                "the checkpoint's frozen backbone was trained on another teacher's image tower than "
                f"MODEL.DISTILL.TEACHER ({who.get('arch', '?')} / {who.get('pretrained') or 'random weights'}): "
                "give the teacher it was trained with"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _rescale(width: int, patch: int, stride: int) -> nn.Module:
    """Tokens at stride `patch` → stride `stride`: 2x transposed convolutions up (norm and GELU between, as F-ViT),
    2x max pooling down, identity at the patch stride."""
    ratio = patch / stride
    if ratio >= 1:
        n = int(round(math.log2(ratio)))
        layers: list[nn.Module] = []
        for i in range(n):
            if i:
                layers += [nn.GroupNorm(32 if width % 32 == 0 else 1, width), nn.GELU()]
            layers.append(nn.ConvTranspose2d(width, width, 2, 2))
        return nn.Sequential(*layers) if layers else nn.Identity()
    n = int(round(math.log2(1 / ratio)))
    return nn.Sequential(*[nn.MaxPool2d(2, 2) for _ in range(n)])


def build_clip_tower(cfg) -> CLIPTower:
    """The frozen tower of MODEL.DISTILL.TEACHER for the student's MODEL.PIXEL_MEAN / PIXEL_STD / INPUT.FORMAT;
    ViT blocks from MODEL.BACKBONE.CLIP_VIT_BLOCKS (empty: `default_vit_blocks`)."""
    from ..teacher import create_teacher

    t = cfg.MODEL.DISTILL.TEACHER
    teacher = create_teacher(t.ARCH, t.PRETRAINED or None)
    return CLIPTower(
        teacher.model.visual,
        teacher.mean,
        teacher.std,
        cfg.MODEL.PIXEL_MEAN,
        cfg.MODEL.PIXEL_STD,
        cfg.INPUT.FORMAT,
        list(cfg.MODEL.BACKBONE.CLIP_VIT_BLOCKS) or None,
        identity={"arch": teacher.arch, "pretrained": teacher.pretrained},
    )
