#!/usr/bin/env python
"""Region-embedding extraction, images/s: the dump tool's previous loop against its pipeline, same run.

    python benchmarks/extraction.py [--images 200] [--vit-images 8] [--proposals 32] [--workers 2]
                                    [--root /tmp/extraction_bench]

Data: the quickstart's synthetic training images (128 px; seed 0), `--proposals` boxes an image (the
quickstart keeps 32 RPN proposals; here ground-truth boxes jittered, so no detector has to be trained).
Teachers: the quickstart's synthetic tiny teacher (64 px crops) on `--images` images and a randomly
initialised open_clip ViT-B-32 (224 px crops) on `--vit-images`, crops at 1x and 1.5x.
- previous loop: per 64-image chunk, images decoded one after another, `Teacher.encode_regions` (crops per
  image, concatenated, encoded), the shard written (format 1, torch.save) before the next chunk starts;
- pipeline: `distill.teacher.regions.dump_region_embeddings` (decoding in DataLoader workers, crops cut into
  a reused batch buffer, shards int8 format 2 written by a background thread).
Timed: everything from opening the writer to finalize. Then what the pipeline's int8 targets do to the
ViLD-image loss, against the previous loop's float16 ones. Prints tables, then one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import torch

from distill.data import synthetic_dataset
from distill.data.images import read_image_rgb
from distill.data.region_store import RegionEmbeddingStore
from distill.data.region_store_v1 import RegionStoreWriterV1, ShardRecord
from distill.data.synthetic import SyntheticConfig, generate
from distill.modeling.losses import vild_image_loss
from distill.teacher import create_teacher
from distill.teacher.regions import dump_region_embeddings
from distill.teacher.teacher import check_boxes

SCALES, CHUNK = (1.0, 1.5), 64


def previous_loop(teacher, dicts, proposals, out: Path) -> None:
    """The dump tool before the pipeline (format-1 shards), kept here as the baseline."""
    meta = {**teacher.provenance(), "dim": teacher.dim, "scales": list(SCALES), "geometry": "center"}
    by_id = {d["image_id"]: d for d in dicts}
    writer = RegionStoreWriterV1(out, meta, list(by_id), CHUNK)
    for k in writer.pending():
        rec, images, boxes = ShardRecord(), [], []
        for image_id in writer.chunks[k]:
            img = read_image_rgb(by_id[image_id]["file_name"])
            b = proposals[image_id]
            ok = check_boxes(b, img.shape[1], img.shape[2])
            rec.image_ids.append(image_id)
            rec.boxes.append(b[ok])
            images.append(img)
            boxes.append(b[ok])
        emb = teacher.encode_regions(images, boxes, SCALES, "center", 256)
        rec.embeddings = list(torch.split(emb.cpu(), [b.shape[0] for b in boxes]))
        writer.write_shard(k, rec)
    writer.finalize()


def int8_effect(fp16: torch.Tensor, int8: torch.Tensor) -> dict:
    """What int8 targets do to the ViLD-image loss (L1 of normalised embeddings, summed over D): the loss
    against int8 targets moves by at most `loss_shift_bound` for any student (triangle inequality), shown
    next to the loss of students at cosine 0.5 / 0.9 to the float16 targets."""
    g = torch.Generator().manual_seed(0)
    out = {"loss_shift_bound": vild_image_loss(torch.nn.functional.normalize(fp16, dim=1), int8).item()}
    for c in (0.5, 0.9):
        t = torch.nn.functional.normalize(fp16, dim=1)
        noise = torch.randn(t.shape, generator=g)
        noise = torch.nn.functional.normalize(noise - (noise * t).sum(1, keepdim=True) * t, dim=1)
        student = c * t + (1 - c * c) ** 0.5 * noise
        out[f"loss_cos{c}_fp16"] = vild_image_loss(student, fp16).item()
        out[f"loss_cos{c}_int8"] = vild_image_loss(student, int8).item()
    return out


def jittered_proposals(dicts, per_image: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    out = {}
    for d in dicts:
        boxes = []
        anns = d["annotations"] or [{"bbox": [0, 0, d["width"], d["height"]]}]
        for j in range(per_image):
            x, y, w, h = anns[j % len(anns)]["bbox"]
            dx, dy, dw, dh = (rng.gauss(0, 0.1) for _ in range(4))
            x0, y0 = x + dx * w, y + dy * h
            boxes.append([x0, y0, x0 + w * (1 + abs(dw)), y0 + h * (1 + abs(dh))])
        out[d["image_id"]] = torch.tensor(boxes, dtype=torch.float32)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=200, help="images for the tiny teacher")
    p.add_argument("--vit-images", type=int, default=8, help="images for ViT-B-32 (~50 ms a crop on 2 cores)")
    p.add_argument("--proposals", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="the pipeline's decoding workers")
    p.add_argument("--root", default="/tmp/extraction_bench")
    args = p.parse_args(argv)
    root = Path(args.root)
    data = root / "synthetic"
    if not (data / "meta.json").is_file():
        generate(data, SyntheticConfig(seed=0, num_train=max(args.images, args.vit_images), num_val=0))
    all_dicts, _ = synthetic_dataset(data, "train")
    rows, result = [], {"threads": torch.get_num_threads(), "workers": args.workers}
    for name, arch, n in (
        ("tiny teacher (64 px)", "synthetic-tiny-teacher", args.images),
        ("ViT-B-32 random (224 px)", "ViT-B-32", args.vit_images),
    ):
        teacher = create_teacher(arch)
        dicts = sorted(all_dicts, key=lambda d: d["image_id"])[:n]
        props = jittered_proposals(dicts, args.proposals)
        times = {}
        for path in ("previous loop", "pipeline"):
            out = root / f"{arch}-{path.replace(' ', '-')}"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            if path == "previous loop":
                previous_loop(teacher, dicts, props, out)
            else:
                dump_region_embeddings(
                    teacher,
                    dicts,
                    props,
                    out,
                    SCALES,
                    "center",
                    CHUNK,
                    progress=False,
                    num_workers=args.workers,
                ).finalize()
            times[path] = time.perf_counter() - t
        a, b = (
            RegionEmbeddingStore(root / f"{arch}-previous-loop"),
            RegionEmbeddingStore(root / f"{arch}-pipeline"),
        )
        fp16 = torch.cat([a[i][1] for i in a.image_ids()]).float()
        int8 = torch.cat([b[i][1] for i in a.image_ids()]).float()
        cos = torch.nn.functional.cosine_similarity(fp16, int8, dim=1).min().item()
        rows.append((name, n, n / times["previous loop"], n / times["pipeline"], cos))
        result[arch] = {
            "images": n,
            "previous_img_s": rows[-1][2],
            "pipeline_img_s": rows[-1][3],
            "speedup": times["previous loop"] / times["pipeline"],
            "min_cosine": cos,
            **int8_effect(fp16, int8),
        }
    print(
        f"torch threads: {torch.get_num_threads()}; pipeline workers: {args.workers}; {args.proposals} "
        f"proposals an image, crops at 1x and 1.5x"
    )
    print(
        "| teacher | images | previous loop img/s | pipeline img/s | speedup | min cosine, pipeline vs previous |\n"
        "|---|---|---|---|---|---|"
    )
    for name, n, a, b, cos in rows:
        print(f"| {name} | {n} | {a:.2f} | {b:.2f} | {b / a:.2f}x | {cos:.4f} |")
    print(
        "\nViLD-image loss (L1, sum over D) against the previous loop's float16 targets and the pipeline's int8 "
        "ones\n| teacher | bound on the shift | student cos 0.5: fp16 / int8 | student cos 0.9: fp16 / int8 |\n"
        "|---|---|---|---|"
    )
    for (name, *_), arch in zip(rows, ("synthetic-tiny-teacher", "ViT-B-32")):
        r = result[arch]
        print(
            f"| {name} | {r['loss_shift_bound']:.5f} | {r['loss_cos0.5_fp16']:.4f} / {r['loss_cos0.5_int8']:.4f} | "
            f"{r['loss_cos0.9_fp16']:.4f} / {r['loss_cos0.9_int8']:.4f} |"
        )
    print(json.dumps(result, default=lambda x: round(x, 4) if isinstance(x, float) else x))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
