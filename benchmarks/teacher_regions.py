#!/usr/bin/env python
"""Region-embedding throughput: batched crops on the image tensor vs the per-box PIL crop + preprocess loop.

    python benchmarks/teacher_regions.py [--crops 512] [--e2e-crops 256] [--repeats 5]

(a) crop stage alone: crops resized to 224 px and normalised into the encoder's batches, as the dump tool
    cuts them (CropBatcher: one reused batch buffer; batches handed over, nothing concatenated), against
    the per-box PIL crop + open_clip preprocess loop stacked into a batch;
(b) end to end (crops + encoder) for the tiny teacher (64 px input) and a randomly initialised ViT-B-32.
Same images and boxes for both paths, one process, medians. Prints a table, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from distill.teacher import create_teacher
from distill.teacher.crops import CropBatcher

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def make_inputs(n_images: int, boxes_per_image: int, seed: int = 0):
    """Smooth 480x640 images (upsampled noise) and boxes of 16-320 px, some past the border."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.nn.functional.interpolate(
        torch.rand(n_images, 3, 30, 40, generator=g), size=(480, 640), mode="bilinear", align_corners=False
    )
    imgs = (imgs * 255).round().to(torch.uint8)
    boxes = []
    for _ in range(n_images):
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([600.0, 440.0])
        wh = 16 + torch.rand(boxes_per_image, 2, generator=g) * 304
        boxes.append(torch.cat([xy, xy + wh], 1).round())
    return imgs, boxes


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pil_crops(pils, boxes, preprocess):
    return torch.stack([preprocess(p.crop(tuple(b.tolist()))) for p, bs in zip(pils, boxes) for b in bs])


def batched_crops(imgs, boxes, batcher: CropBatcher):
    """The dump tool's crop stage: every image's crops cut into the batch buffer (the encoder takes each full
    batch from there)."""
    for i, b in zip(imgs, boxes):
        for _ in batcher.add(i, b):
            pass
    batcher.flush()


def main(argv=None) -> int:
    import open_clip

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--crops", type=int, default=512)
    p.add_argument("--e2e-crops", type=int, default=256, help="boxes of one image, tiny teacher")
    p.add_argument(
        "--e2e-crops-vit", type=int, default=64, help="boxes of one image, ViT-B-32 (~50 ms/crop on CPU)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, 2 on 2 cores)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each path (medians; at least 5)")
    args = p.parse_args(argv)
    if args.repeats < 5:
        p.error("--repeats must be at least 5 (medians of fewer runs swing with the machine's load)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows, result = [], {"threads": torch.get_num_threads()}

    per_image = 64
    imgs, boxes = make_inputs(max(1, args.crops // per_image), per_image)
    pils = [Image.fromarray(np.ascontiguousarray(i.permute(1, 2, 0).numpy())) for i in imgs]
    pre = open_clip.image_transform(224, is_train=False, mean=MEAN, std=STD)
    n = sum(b.shape[0] for b in boxes)
    t_pil = median_time(lambda: pil_crops(pils, boxes, pre), args.repeats)
    batcher = CropBatcher(256, 224, MEAN, STD, "center")  # made once per run by the dump tool too
    t_bat = median_time(lambda: batched_crops(imgs, boxes, batcher), args.repeats)
    rows.append(("crop stage @224", n, n / t_pil, n / t_bat))
    result["crop_speedup"] = t_pil / t_bat

    teachers = [
        ("tiny teacher (64 px)", create_teacher("distill-tiny-vit"), args.e2e_crops),
        ("ViT-B-32 random (224 px)", create_teacher("ViT-B-32"), args.e2e_crops_vit),
    ]
    for name, t, count in teachers:
        e_imgs, e_boxes = make_inputs(1, count, seed=1)
        e_pils = [Image.fromarray(np.ascontiguousarray(i.permute(1, 2, 0).numpy())) for i in e_imgs]
        ref = lambda t=t, p=e_pils, b=e_boxes: t.encode_image(pil_crops(p, b, t.preprocess))  # noqa: E731
        ours = lambda t=t, i=e_imgs, b=e_boxes: t.encode_regions(list(i), b, scales=(1.0,))  # noqa: E731
        ta, tb = median_time(ref, args.repeats), median_time(ours, args.repeats)
        rows.append((f"end to end, {name}", count, count / ta, count / tb))
        result["e2e_speedup_" + t.arch.replace("-", "_")] = ta / tb

    print(f"torch threads: {torch.get_num_threads()}")
    print("| stage | crops | PIL loop crops/s | batched crops/s | speedup |\n|---|---|---|---|---|")
    for name, count, a, b in rows:
        print(f"| {name} | {count} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
