#!/usr/bin/env python
"""CLIPSelf's training step against a plain forward + backward of the same ViT at the same image size, and the
teacher's crop embeddings per second through the batched resampler against a per-crop loop, in one run.

    python benchmarks/clipself_step.py [--arch distill-tiny-vit] [--image-size 256] [--batch 2] [--boxes 20]
                                       [--steps 5] [--device cpu] [--threads 1]
    python benchmarks/clipself_step.py --arch ViT-B-16 --image-size 224 --batch 1 --steps 2   # real shapes

Random weights (`create_teacher(arch, "none")`, seeded) and random images of --image-size px, each with a
fixed grid of --boxes cells (4 x 5 for 20; CLIPSelf's largest). Both steps include AdamW's update.
- plain: `visual(x)` (attention in every block, the pooled embedding), mean as the loss, backward.
- clipself: the teacher's crops of every box (batched resampler, no grad) and their embeddings, the student's
  dense features (`vit_dense`), RoIAlign 1x1, 1 - cosine, backward. Split into its teacher and student parts.
- crops/s: batched = one `crop_regions` call per image for all its boxes, then one `encode_image`; per-crop =
  `crop_regions` and `encode_image` for one box at a time.
Prints a table of median seconds and the ratios, then one line of JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time


def _grid(n: int) -> tuple[int, int]:
    """m x n with m * n == boxes, m <= n, as square as possible."""
    best = (1, n)
    for m in range(1, int(n**0.5) + 1):
        if n % m == 0:
            best = (m, n // m)
    return best


def _timed(fn, steps: int, sync) -> float:
    fn()  # warm-up: allocator, autograd graph, kernels
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="distill-tiny-vit")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--boxes", type=int, default=20, help="grid cells per image")
    p.add_argument("--steps", type=int, default=5, help="timed repetitions (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from distill.teacher import create_teacher
    from distill.teacher.clipself import (
        RegionHead,
        clipself_loss,
        require_vit,
        student_input,
        teacher_targets,
    )

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    teacher = create_teacher(args.arch, "none", device=args.device)
    require_vit(teacher)
    g = torch.Generator().manual_seed(0)
    s = args.image_size
    images = [torch.randint(0, 256, (3, s, s), dtype=torch.uint8, generator=g) for _ in range(args.batch)]
    m, n = _grid(args.boxes)
    ys, xs = torch.linspace(0, s, m + 1), torch.linspace(0, s, n + 1)
    cells = torch.tensor(
        [[xs[j], ys[i], xs[j + 1], ys[i + 1]] for i in range(m) for j in range(n)], dtype=torch.float32
    )
    boxes = [cells.clone() for _ in images]
    head = RegionHead(copy.deepcopy(teacher.model.visual)).to(dev)
    for q in head.parameters():
        q.requires_grad_(True)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-5, weight_decay=0.1)
    x = torch.stack([student_input(im, s, head.patch, teacher.mean, teacher.std)[0] for im in images]).to(dev)
    sboxes = [b.to(dev) for b in boxes]

    # the plain ViT: the same tower, its positional embedding resized once to the input's grid (open_clip's
    # forward does not interpolate it), the usual forward with attention in every block
    from distill.teacher.vit_dense import vit_pos_embed

    plain_visual = copy.deepcopy(head.visual)
    grid = s // head.patch if s % head.patch == 0 else -(-s // head.patch)
    with torch.no_grad():
        plain_visual.positional_embedding = torch.nn.Parameter(
            vit_pos_embed(plain_visual, grid, grid).clone()
        )
    plain_opt = torch.optim.AdamW(plain_visual.parameters(), lr=1e-5, weight_decay=0.1)

    def plain():
        loss = plain_visual(x).float().mean()
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        plain_opt.step()

    def targets():
        return teacher_targets(teacher, images, boxes, "center")

    target = targets()

    def student():
        loss = clipself_loss(head(x, sboxes), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def clipself_step():
        t = targets()
        loss = clipself_loss(head(x, sboxes), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_plain = _timed(plain, args.steps, sync)
    t_step = _timed(clipself_step, args.steps, sync)
    t_teacher = _timed(targets, args.steps, sync)
    t_student = _timed(student, args.steps, sync)

    num = sum(b.shape[0] for b in boxes)

    @torch.no_grad()
    def batched():
        crops = torch.cat([teacher.crop_regions(im.to(dev), b.to(dev)) for im, b in zip(images, boxes)])
        return teacher.encode_image(crops)

    @torch.no_grad()
    def per_crop():
        out = []
        for im, b in zip(images, boxes):
            im = im.to(dev)
            for k in range(b.shape[0]):
                out.append(teacher.encode_image(teacher.crop_regions(im, b[k : k + 1].to(dev))))
        return torch.cat(out)

    same = torch.allclose(batched(), per_crop(), atol=1e-4)
    t_batched = _timed(batched, args.steps, sync)
    t_loop = _timed(per_crop, args.steps, sync)

    row = {
        "arch": args.arch,
        "image_size": s,
        "teacher_input": teacher.input_size,
        "batch": args.batch,
        "boxes_per_image": num // args.batch,
        "device": str(dev),
        "threads": args.threads,
        "plain_step_s": round(t_plain, 4),
        "clipself_step_s": round(t_step, 4),
        "clipself_teacher_s": round(t_teacher, 4),
        "clipself_student_s": round(t_student, 4),
        "step_ratio": round(t_step / t_plain, 3),
        "crops_per_s_batched": round(num / t_batched, 1),
        "crops_per_s_per_crop": round(num / t_loop, 1),
        "crops_speedup": round(t_loop / t_batched, 2),
        "batched_equals_per_crop": bool(same),
    }
    print(
        f"{args.arch}, images {args.batch} x {s}px, {num // args.batch} boxes each, teacher input "
        f"{teacher.input_size}px, {dev} ({args.threads} thread(s)), median of {args.steps}"
    )
    print("| measure | seconds | ratio |\n|---|---|---|")
    print(f"| plain forward + backward + AdamW | {t_plain:.4f} | 1.00 |")
    print(f"| CLIPSelf step | {t_step:.4f} | {t_step / t_plain:.2f} |")
    print(f"|   of which teacher crops + encode (no grad) | {t_teacher:.4f} | {t_teacher / t_plain:.2f} |")
    print(
        f"|   of which student dense + RoIAlign + backward + AdamW | {t_student:.4f} "
        f"| {t_student / t_plain:.2f} |"
    )
    print("| crops | crops/s | speed-up |\n|---|---|---|")
    print(f"| per-crop loop (crop_regions + encode_image per box) | {num / t_loop:.1f} | 1.00 |")
    print(f"| batched resampler + one encode_image | {num / t_batched:.1f} | {t_loop / t_batched:.2f} |")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
