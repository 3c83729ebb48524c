"""Geometry of the synthetic benchmark's shapes: unit polygons per category name, rasterised deterministically."""

from __future__ import annotations

import cv2
import numpy as np


def _circle(n=48, r=1.0, cx=0.0, cy=0.0, a0=0.0, a1=2 * np.pi):
    t = np.linspace(a0, a1, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _regular(k, r=1.0, phase=-np.pi / 2):
    t = phase + 2 * np.pi * np.arange(k) / k
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _star(k=5, r0=1.0, r1=0.45):
    t = -np.pi / 2 + np.pi * np.arange(2 * k) / k
    r = np.where(np.arange(2 * k) % 2 == 0, r0, r1)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _heart(n=64):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x / 17.0, (y + 2.5) / 17.0], 1)


def _semicircle(n=40):
    arc = _circle(n, a0=np.pi, a1=2 * np.pi)  # upper half (y < 0)
    pts = np.concatenate([arc, [[1.0, 0.0]]], 0)
    return pts + [0.0, 0.5]


_P = np.array
# Each shape: list of (polygon, +1 fill / -1 erase), drawn in order.
_SHAPES = {
    "circle": lambda: [(_circle(), 1)],
    "square": lambda: [(_P([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 1)],
    "triangle": lambda: [(_P([[0, -1], [0.95, 0.65], [-0.95, 0.65]]), 1)],
    "diamond": lambda: [(_P([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]]), 1)],
    "star": lambda: [(_star(), 1)],
    "cross": lambda: [
        (
            _P(
                [
                    [-0.3, -1],
                    [0.3, -1],
                    [0.3, -0.3],
                    [1, -0.3],
                    [1, 0.3],
                    [0.3, 0.3],
                    [0.3, 1],
                    [-0.3, 1],
                    [-0.3, 0.3],
                    [-1, 0.3],
                    [-1, -0.3],
                    [-0.3, -0.3],
                ]
            ),
            1,
        )
    ],
    "crescent": lambda: [(_circle(), 1), (_circle(r=0.85, cx=0.45, cy=-0.2), -1)],
    "ring": lambda: [(_circle(), 1), (_circle(r=0.55), -1)],
    "heart": lambda: [(_heart(), 1)],
    "semicircle": lambda: [(_semicircle(), 1)],
    "arrow": lambda: [
        (_P([[-1, -0.22], [0.15, -0.22], [0.15, -0.65], [1, 0], [0.15, 0.65], [0.15, 0.22], [-1, 0.22]]), 1)
    ],
    "ellipse": lambda: [(_circle(r=1.0) * [1.0, 0.5], 1)],
    "trapezoid": lambda: [(_P([[-1, 0.55], [1, 0.55], [0.45, -0.55], [-0.45, -0.55]]), 1)],
    "hexagon": lambda: [(_regular(6, phase=0.0), 1)],
    "chevron": lambda: [(_P([[-1, -0.7], [0, 0.1], [1, -0.7], [1, -0.1], [0, 0.7], [-1, -0.1]]), 1)],
}


# Shapes of the method benchmark's world only (distill.data.synthetic_methods): its novel classes that share
# no word with a base class.
_SHAPES |= {
    "pentagon": lambda: [(_regular(5), 1)],
    "octagon": lambda: [(_regular(8, phase=np.pi / 8), 1)],
    "kite": lambda: [(_P([[0, -1], [0.6, -0.35], [0, 1], [-0.6, -0.35]]), 1)],
    "bolt": lambda: [
        (_P([[0.15, -1], [0.55, -1], [0.2, -0.15], [0.6, -0.15], [-0.3, 1], [-0.05, 0.15], [-0.5, 0.15]]), 1)
    ],
}


def render_shape(name: str, size: int, cx: float, cy: float, scale: float, angle: float, aspect: float):
    """Binary (size, size) mask of one shape centred at (cx, cy) with half-extent `scale` pixels."""
    return render_parts(_SHAPES[name](), size, cx, cy, scale, angle, aspect)


def render_parts(parts, size: int, cx: float, cy: float, scale: float, angle: float, aspect: float):
    """Binary (size, size) mask of (unit polygon (K, 2), +1 fill / -1 erase) parts drawn in order."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    mask = np.zeros((size, size), np.uint8)
    for poly, sign in parts:
        pts = (np.asarray(poly, np.float64) * [aspect, 1.0]) @ rot.T * scale + [cx, cy]
        # 4 bits of sub-pixel precision: smoother small shapes, still integer (deterministic) drawing
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1 if sign > 0 else 0, cv2.LINE_8, shift=4)
    return mask.astype(bool)
