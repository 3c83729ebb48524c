import pytest
import torch
import torch.nn.functional as F

from distill.teacher.dense_targets import (
    DenseTargetCache,
    DenseTargetConfig,
    compute_dense_targets,
    regions_to_dense,
    target_hw,
    window_boxes,
)
from distill.teacher.teacher import Teacher
from distill.utils import DistillInputError

D = 6


class FakeTeacher:
    """Counts calls; region embeddings encode the box centre, pixel embeddings are constant."""

    dim = D

    def __init__(self, arch="fake"):
        self.arch, self.calls = arch, 0

    def provenance(self):
        return {"teacher": {"arch": self.arch, "pretrained": None}}

    def encode_regions(self, images, boxes, scales=(1.0,), geometry="stretch"):
        self.calls += 1
        b = boxes[0]
        e = torch.zeros(b.shape[0], D)
        e[:, 0] = (b[:, 0] + b[:, 2]) / 2
        e[:, 1] = (b[:, 1] + b[:, 3]) / 2
        e[:, 2] = 1.0
        return F.normalize(e, dim=-1)

    def encode_pixels(self, images):
        self.calls += 1
        b, _, h, w = images.shape
        return F.normalize(torch.ones(b, D, h // 32, w // 32), dim=1)


def test_window_boxes_cover_the_image_flush_with_edges():
    b = window_boxes(96, 80, (32, 48), 16)
    assert ((b[:, 2] - b[:, 0]) == (b[:, 3] - b[:, 1])).all()
    assert b[:, 0].min() == 0 and b[:, 1].min() == 0 and b[:, 2].max() == 80 and b[:, 3].max() == 96
    n32 = len(range(0, 96 - 32 + 1, 16)) * len(range(0, 80 - 32 + 1, 16))
    n48 = len(range(0, 96 - 48 + 1, 16)) * (len(range(0, 80 - 48 + 1, 16)) + 0)
    assert len(b) == n32 + n48
    assert window_boxes(20, 20, (32,), 16).tolist() == [[0, 0, 20, 20]]  # window larger than the image


def test_regions_paint_inside_their_boxes_centres_dominate():
    e = torch.eye(D)[:2]
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 0.0, 64.0, 32.0]])
    dense = regions_to_dense(e, boxes, 64, 64, 8)
    assert dense.shape == (D, 8, 8)
    assert dense[:, 4:].abs().sum() == 0  # rows below y = 32: no box
    norms = dense.norm(dim=0)[:4]
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert dense[0, 1, 0] > 0.99 and dense[1, 1, 0] == 0  # only box 0 reaches x = 4
    assert dense[1, 1, 5] > dense[0, 1, 5]  # x = 44: box 1's centre (40) is closer
    assert target_hw(65, 64, 8) == (9, 8)


@pytest.mark.parametrize("kind", ["pixels", "windows"])
def test_compute_shapes(kind):
    t = FakeTeacher()
    img = torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8)
    out = compute_dense_targets(t, img, DenseTargetConfig(kind=kind, stride=8, window_sizes=(32,)))
    assert out.shape == (D, 8, 6)
    assert torch.allclose(out.norm(dim=0), torch.ones(8, 6), atol=1e-4)


def test_real_tiny_teacher_both_kinds():
    from distill.teacher import create_teacher

    teacher = create_teacher("distill-tiny-rn", None)  # random weights: shapes only
    img = torch.rand(3, 64, 64)
    for kind in ("pixels", "windows"):
        out = compute_dense_targets(
            teacher, img, DenseTargetConfig(kind=kind, window_sizes=(32,), window_stride=32)
        )
        assert out.shape == (teacher.dim, 8, 8) and torch.isfinite(out).all()


def test_cache_computes_once_and_checks(tmp_path):
    t = FakeTeacher()
    cfg = DenseTargetConfig(kind="windows", window_sizes=(32,))
    img = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    cache = DenseTargetCache(tmp_path, t, cfg)
    a = cache.get(7, img)
    assert t.calls == 1 and a.dtype == torch.float16 and cache.path(7).is_file()
    assert not list(cache.dir.glob("*.partial"))
    again = DenseTargetCache(tmp_path, t, cfg)  # another run with the same settings shares the files
    assert torch.equal(again.get(7), a) and t.calls == 1
    other = DenseTargetCache(tmp_path, t, DenseTargetConfig(kind="pixels"))
    assert other.dir != cache.dir
    with pytest.raises(DistillInputError, match="no cached dense targets for image 8"):
        again.get(8)
    (cache.dir / "meta.json").write_text('{"format": "x"}')
    with pytest.raises(DistillInputError, match="other settings or another teacher"):
        DenseTargetCache(tmp_path, t, cfg)
    cache.path(9).write_bytes(b"garbage")
    with pytest.raises(DistillInputError, match=r"9\.pt: unreadable dense target cache entry"):
        cache.get(9)


def test_bad_settings():
    with pytest.raises(DistillInputError, match="kind"):
        DenseTargetConfig(kind="maskclip")
    with pytest.raises(DistillInputError, match=r"must be \(3, H, W\)"):
        compute_dense_targets(FakeTeacher(), torch.zeros(64, 64), DenseTargetConfig())


def test_regions_kind_needs_boxes_and_paints_only_them():
    t = FakeTeacher()
    img = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    cfg = DenseTargetConfig(kind="regions")
    with pytest.raises(DistillInputError, match="need boxes"):
        compute_dense_targets(t, img, cfg)
    boxes = torch.tensor([[0.0, 0.0, 24.0, 24.0], [100.0, 100.0, 120.0, 120.0]])  # the second is outside
    out = compute_dense_targets(t, img, cfg, boxes)
    assert out.shape == (D, 8, 8)
    covered = out.norm(dim=0) > 0
    assert covered[:3, :3].all() and not covered[3:].any() and not covered[:, 3:].any()
    assert compute_dense_targets(t, img, cfg, torch.zeros(0, 4)).abs().sum() == 0


class StoreTeacher(FakeTeacher):
    """Embeds 8 x 8 crops by a fixed projection; its region path is the real teacher's (crops at each scale,
    `encode_image`), the path `dump_region_embeddings` takes too."""

    input_size, mean, std, device = 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu")
    crop_regions = Teacher.crop_regions
    encode_regions = Teacher.encode_regions

    def encode_image(self, crops, batch_size=256):
        self.calls += 1
        w = torch.randn(3 * 8 * 8, D, generator=torch.Generator().manual_seed(0))
        return F.normalize(crops.flatten(1) @ w, dim=-1)


def test_regions_painted_from_the_region_store_equal_the_cropped_ones(tmp_path):
    import cv2
    import numpy as np

    from distill.integrations.torchvision.sem_seg import dense_targets_for
    from distill.teacher.dense_targets import dense_targets_from_store, open_region_store
    from distill.teacher.regions import dump_region_embeddings

    t = StoreTeacher()
    rng = np.random.default_rng(0)
    dicts, boxes = [], {}
    for i in (3, 4, 5):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        dicts.append({"image_id": i, "file_name": str(path)})
        boxes[i] = torch.tensor([[2.0, 3.0, 30.0, 40.0], [20.0 + i, 8.0, 60.0, 47.0], [70.0, 0.0, 90.0, 9.0]])
    boxes[5] = torch.zeros(0, 4)
    dump_region_embeddings(t, dicts, boxes, tmp_path / "store", progress=False).finalize()
    cfg = DenseTargetConfig(kind="regions")
    store = open_region_store(tmp_path / "store", t, cfg)
    from distill.data.images import read_image_rgb

    for d in dicts:
        img = read_image_rgb(d["file_name"])
        want = compute_dense_targets(t, img, cfg, boxes[d["image_id"]])  # the box outside is dropped alike
        got = dense_targets_from_store(store, d["image_id"], 48, 64, cfg)
        assert got.shape == want.shape == (D, 6, 8)
        assert torch.allclose(got, want, atol=1e-2), d["image_id"]  # the store keeps int8 embeddings
    assert dense_targets_from_store(store, 5, 48, 64, cfg).abs().sum() == 0

    samples = [
        {"image_id": d["image_id"], "file_name": d["file_name"], "image": read_image_rgb(d["file_name"])}
        for d in dicts
    ]
    calls = t.calls
    out = dense_targets_for(samples, t, cfg, None, None, store=store)
    assert t.calls == calls and sorted(out) == [3, 4, 5] and out[3].dtype == torch.float16  # no crop again
    missing = dict(samples[0], image_id=9)
    with pytest.raises(DistillInputError, match="image 9 is not in .*REGION_STORE"):
        dense_targets_for([missing], t, cfg, None, None, store=store)
    with pytest.raises(DistillInputError, match="another scales"):
        open_region_store(tmp_path / "store", t, DenseTargetConfig(kind="regions", region_scales=(1.0,)))
    with pytest.raises(DistillInputError, match="another teacher"):
        open_region_store(tmp_path / "store", StoreTeacher("other"), cfg)
