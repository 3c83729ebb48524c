"""Images cut short (an interrupted copy or download) are refused where images are read, like undecodable ones:
OpenCV would decode a truncated JPEG with only a libjpeg warning and grey rows, a partial picture passed as whole."""

import cv2
import numpy as np
import pytest
import torch

from distill.data.images import check_image_complete, read_image_rgb
from distill.utils import DistillInputError


def _picture(path, ext=".jpg", keep=1.0, trailing=b""):
    """A 64x48 noise picture written as `ext`, its bytes cut to the fraction `keep`, `trailing` appended."""
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    data = cv2.imencode(ext, img)[1].tobytes()
    path.write_bytes(data[: int(len(data) * keep)] + trailing)
    return path


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_jpeg_and_png_are_refused(tmp_path, ext, keep):
    cut = _picture(tmp_path / f"cut{ext}", ext, keep)
    with pytest.raises(DistillInputError, match="truncated or corrupt image file"):
        read_image_rgb(cut)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_whole_files_read_also_with_bytes_after_the_end_marker(tmp_path, ext):
    whole = read_image_rgb(_picture(tmp_path / f"a{ext}", ext))
    assert whole.shape == (3, 48, 64) and whole.dtype == torch.uint8
    padded = _picture(tmp_path / f"b{ext}", ext, trailing=b"\x00" * 100)
    appended = _picture(tmp_path / f"c{ext}", ext, trailing=b"camera maker notes" * 10)
    for p in (padded, appended):
        assert torch.equal(read_image_rgb(p), whole)
    check_image_complete(tmp_path / f"a{ext}")  # no error


def test_the_region_dump_skips_a_truncated_image_with_its_reason(tmp_path):
    from distill.teacher.regions import _Images

    items = [
        (0, 1, str(_picture(tmp_path / "ok.jpg"))),
        (0, 2, str(_picture(tmp_path / "cut.jpg", keep=0.6))),
    ]
    (_, _, ok, none), (_, _, missing, reason) = _Images(items)[0], _Images(items)[1]
    assert ok is not None and none is None
    assert missing is None and "truncated" in reason and "cut.jpg" in reason
