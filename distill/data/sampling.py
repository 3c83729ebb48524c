"""Repeat-factor sampling (LVIS, Gupta et al. 2019), the rule of detectron2's RepeatFactorTrainingSampler, for
the torchvision backend's training stream: an image is repeated by the largest factor of its categories,
r_c = max(1, sqrt(t / f_c)), f_c the fraction of training images that hold category c."""

from __future__ import annotations

import math

import numpy as np


def repeat_factors(dataset_dicts: list[dict], threshold: float) -> np.ndarray:
    """(N,) float repeat factor of each image (1 for images without annotations)."""
    counts: dict[int, int] = {}
    for d in dataset_dicts:
        for c in {a["category_id"] for a in d.get("annotations", [])}:
            counts[c] = counts.get(c, 0) + 1
    n = max(1, len(dataset_dicts))
    per_cat = {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in counts.items()}
    return np.array(
        [
            max([per_cat[a["category_id"]] for a in d.get("annotations", [])], default=1.0)
            for d in dataset_dicts
        ],
        dtype=np.float64,
    )


def repeated_indices(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch: image i appears floor(r_i) times, plus once more with probability frac(r_i); shuffled."""
    whole = np.floor(factors)
    reps = (whole + (rng.random(len(factors)) < factors - whole)).astype(np.int64)
    return rng.permutation(np.repeat(np.arange(len(factors)), reps))
