"""Drawings scale with the picture: lines, labels and the legend of an 8000x6000 photo are not 1 px thin."""

import numpy as np

from distill.utils.visualize import _color, draw_detections
from distill.utils.visualize_semseg import render_semseg


def line_width(img: np.ndarray, row: int, color) -> int:
    """Pixels of `color` in one row of the picture, left of its middle (one vertical box edge)."""
    half = img[row, : img.shape[1] // 2]
    return int((half == np.array(color, np.uint8)).all(1).sum())


def test_box_lines_and_labels_grow_with_the_image():
    widths, label_rows = [], []
    for side in (400, 4000):
        img = np.zeros((side * 3 // 4, side, 3), np.uint8)
        box = np.array([[side * 0.2, side * 0.2, side * 0.6, side * 0.5]])
        out = draw_detections(img, box, [1], [0.9], ["a", "star"])
        widths.append(line_width(out, int(side * 0.4), _color(1)))
        label = (out[: int(side * 0.2), int(side * 0.2) : int(side * 0.6)] == _color(1)).all(2).any(1)
        label_rows.append(int(label.sum()))  # the height of the label's filled background
    assert widths[0] == 1 and widths[1] >= 6, widths
    assert label_rows[1] >= 6 * label_rows[0], label_rows


def test_legend_grows_with_the_image():
    widths = []
    for side in (300, 3000):
        img = np.zeros((side, side, 3), np.uint8)
        out = render_semseg(img, np.zeros((side, side), np.int64), ["background", "star", "moon"])
        widths.append(out.shape[1] - side)
    assert widths[1] >= 5 * widths[0], widths
