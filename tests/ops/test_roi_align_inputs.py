"""Bad input is rejected with a ValueError/TypeError naming the argument, before any kernel runs."""

import pytest

from distill.ops import multilevel_roi_align
from tests.ops.roi_oracle import STRIDES, random_features, random_rois


@pytest.fixture
def good():
    return random_features(channels=2), random_rois(6)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda f, r: (f[0], r, 7, STRIDES), TypeError, "features"),
        (lambda f, r: ([], r, 7, STRIDES), TypeError, "features"),
        (lambda f, r: ([f[0], f[1].numpy(), *f[2:]], r, 7, STRIDES), TypeError, r"features\[1\]"),
        (lambda f, r: ([f[0][0], *f[1:]], r, 7, STRIDES), ValueError, r"features\[0\] must be 4-D"),
        (lambda f, r: ([f[0], f[1].long(), *f[2:]], r, 7, STRIDES), TypeError, r"features\[1\]"),
        (lambda f, r: ([f[0], f[1].double(), *f[2:]], r, 7, STRIDES), TypeError, r"features\[1\] has dtype"),
        (lambda f, r: ([f[0], f[1][:1], *f[2:]], r, 7, STRIDES), ValueError, r"features\[1\] has \(B, C\)"),
        (
            lambda f, r: ([f[0], f[1][:, :1], *f[2:]], r, 7, STRIDES),
            ValueError,
            r"features\[1\] has \(B, C\)",
        ),
        (
            lambda f, r: ([f[0], f[1].to("meta"), *f[2:]], r, 7, STRIDES),
            ValueError,
            r"features\[1\] is on meta",
        ),
        (lambda f, r: (f, r.numpy(), 7, STRIDES), TypeError, "rois"),
        (lambda f, r: (f, r.long(), 7, STRIDES), TypeError, "rois"),
        (lambda f, r: (f, r[:, 1:], 7, STRIDES), ValueError, r"rois must be \(K, 5\)"),
        (lambda f, r: (f, r[0], 7, STRIDES), ValueError, r"rois must be \(K, 5\)"),
        (lambda f, r: (f, r.to("meta"), 7, STRIDES), ValueError, "rois is on meta"),
        (lambda f, r: (f, r, 7, [4, 8, 16]), ValueError, "strides"),
        (lambda f, r: (f, r, 7, [4, 8, 12, 16]), ValueError, "strides must be powers of two"),
        (lambda f, r: (f, r, 7, [3, 6, 12, 24]), ValueError, "strides must be powers of two"),
        (lambda f, r: (f, r, 7, [4, 16, 32, 64]), ValueError, "consecutive"),
        (lambda f, r: (f, r, 7, [32, 16, 8, 4]), ValueError, "consecutive"),
        (lambda f, r: (f, r, 0, STRIDES), ValueError, "output_size"),
        (lambda f, r: (f, r, (7, 7, 7), STRIDES), ValueError, "output_size"),
    ],
)
def test_bad_arguments(good, make, error, match):
    with pytest.raises(error, match=match):
        multilevel_roi_align(*make(*good))


def test_bad_sampling_ratio_and_box_size(good):
    features, rois = good
    with pytest.raises(ValueError, match="sampling_ratio"):
        multilevel_roi_align(features, rois, 7, STRIDES, sampling_ratio=-1)
    with pytest.raises(ValueError, match="canonical_box_size"):
        multilevel_roi_align(features, rois, 7, STRIDES, canonical_box_size=0)


@pytest.mark.parametrize("index", [-1.0, 2.0, 0.5, float("nan")])
def test_batch_index_out_of_range(good, index):
    features, rois = good
    rois = rois.clone()
    rois[3, 0] = index
    with pytest.raises(ValueError, match=r"rois\[3, 0\]"):
        multilevel_roi_align(features, rois, 7, STRIDES)


def test_batch_index_check_can_be_skipped_but_kernel_still_guards(good):
    features, rois = good
    rois = rois.clone()
    rois[0, 0] = 5
    with pytest.raises((ValueError, RuntimeError)):
        multilevel_roi_align(features, rois, 7, STRIDES, check_inputs=False)
