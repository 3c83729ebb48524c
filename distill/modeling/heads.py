"""Open-vocabulary detector heads, framework-free: region embeddings, a text classifier with a learned background, the
class-agnostic box regressor and mask head.

Conventions: C classes in the vocabulary; classifier logits are (N, C + 1) with background in the LAST
column (detectron2's order; backends with background first permute at their boundary).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..teacher.embeddings import ClassEmbeddings
from ..utils.errors import DistillInputError


class RegionEmbeddingHead(nn.Module):
    """Box-head features (N, in_dim) → region embeddings (N, D), L2-normalised (ViLD: 1024 → 512)."""

    def __init__(self, in_dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x.flatten(1)), dim=-1)


class TextClassifier(nn.Module):
    """Cosine similarity to frozen class embeddings and a learned background embedding, over a temperature.

    Args:
        class_embeddings: (C, D) L2-normalised text embeddings (the training vocabulary).
        temperature: logits = cos / temperature (ViLD: 0.01).
        bg_init_std: the background embedding starts as N(0, std) (ViLD: 0.01); it is normalised in use.
        class_names: the C names, in order (None: unnamed classes).
    """

    def __init__(
        self,
        class_embeddings: torch.Tensor,
        temperature: float = 0.01,
        bg_init_std: float = 0.01,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__()
        if class_embeddings.ndim != 2:
            raise DistillInputError(f"class embeddings must be (C, D), got {tuple(class_embeddings.shape)}")
        self.temperature = float(temperature)
        self.register_buffer(
            "class_embeddings", F.normalize(class_embeddings.float(), dim=-1), persistent=False
        )
        self.bg_embedding = nn.Parameter(torch.randn(class_embeddings.shape[1]) * bg_init_std)
        if class_names is not None and len(class_names) != class_embeddings.shape[0]:
            raise DistillInputError(
                f"{len(class_names)} class names for {class_embeddings.shape[0]} embeddings"
            )
        self.class_names: list[str] | None = None if class_names is None else list(class_names)

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def no_weight_decay(self) -> list[nn.Parameter]:
        """Parameters the optimisers never decay: the background embedding is normalised in use, decay would
        only shrink it. (Any module may declare this; `distill.modeling.no_weight_decay_params` collects them.)"""
        return [self.bg_embedding]

    def state(self) -> tuple:
        """What `set_vocabulary` changes, for `restore`."""
        return self.class_embeddings, self.class_names

    def restore(self, state: tuple) -> None:
        self.class_embeddings, self.class_names = state

    @property
    def embed_dim(self) -> int:
        return int(self.class_embeddings.shape[1])

    def set_vocabulary(self, vocabulary: ClassEmbeddings | torch.Tensor) -> None:
        """Swap the classes scored (e.g. base for training, base + novel or a custom list at inference)."""
        emb = vocabulary.embeddings if isinstance(vocabulary, ClassEmbeddings) else vocabulary
        if emb.ndim != 2 or emb.shape[1] != self.embed_dim:
            raise DistillInputError(
                f"vocabulary embeddings have shape {tuple(emb.shape)}; this model needs (C, {self.embed_dim})"
            )
        if emb.shape[0] == 0:
            raise DistillInputError("empty vocabulary")
        self.class_embeddings = F.normalize(emb.float(), dim=-1).to(self.bg_embedding.device)
        self.class_names = list(vocabulary.class_names) if isinstance(vocabulary, ClassEmbeddings) else None

    def forward(self, region_embeddings: torch.Tensor) -> torch.Tensor:
        """(N, D) normalised region embeddings → (N, C + 1) logits, background last."""
        cls = region_embeddings @ self.class_embeddings.to(region_embeddings.dtype).t()
        bg = region_embeddings @ F.normalize(self.bg_embedding, dim=0).to(region_embeddings.dtype)
        return torch.cat([cls, bg[:, None]], 1) / self.temperature


class FastRCNNConvFCHead(nn.Module):
    """Pooled RoI features (N, C, h, w) → (N, fc_dim) with `num_fc` fully connected layers (detectron2's 2fc)."""

    def __init__(self, in_channels: int, resolution: int, fc_dim: int = 1024, num_fc: int = 2):
        super().__init__()
        layers, d = [], in_channels * resolution * resolution
        for _ in range(num_fc):
            fc = nn.Linear(d, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            layers += [fc, nn.ReLU(inplace=True)]
            d = fc_dim
        self.fcs = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcs(x.flatten(1))


class ClassAgnosticBoxRegressor(nn.Module):
    """(N, fc_dim) → (N, 4) box deltas shared by all classes: boxes for classes never seen in training."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.bbox_pred = nn.Linear(in_dim, 4)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bbox_pred(x)


class ClassAgnosticMaskHead(nn.Module):
    """Mask R-CNN's 4-conv head with one output mask for any class: (N, C, 14, 14) → (N, 1, 28, 28) logits."""

    def __init__(self, in_channels: int, conv_dim: int = 256, num_conv: int = 4):
        super().__init__()
        layers, c = [], in_channels
        for _ in range(num_conv):
            conv = nn.Conv2d(c, conv_dim, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            c = conv_dim
        self.convs = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(c, conv_dim, 2, stride=2)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        self.predictor = nn.Conv2d(conv_dim, 1, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(F.relu(self.deconv(self.convs(x))))


def no_weight_decay_params(model: nn.Module) -> set[int]:
    """ids of the parameters that the modules of `model` declare in `no_weight_decay()`."""
    return {id(p) for m in model.modules() if hasattr(m, "no_weight_decay") for p in m.no_weight_decay()}
