#!/usr/bin/env python
"""Training-step time and peak memory of BARON against ViLD at the same batch and image size, on this machine's
CPU (or --device cuda), each variant in its own process (peak memory is per process); BARON's parts inside its
step; the teacher crops, fused resampler against a per-bag roi_align + interpolate loop; teacher image-tower
forwards per training image.

    python benchmarks/baron_step.py [--size 512] [--batch 2] [--steps 5] [--confident 10] [--device cpu] [--json]

ViLD: the OV-COCO recipe's R50-FPN student (random weights) distilling 300 region-store boxes per image (random
targets). BARON: the same student with the recipe's bags of regions, the random ViT-B/32 teacher cropping each
bag's spanning box online and its frozen text tower encoding the pseudo-words. Same random images, ground truth
and vocabulary size (48 base classes). A random RPN's objectness drifts with the steps (the first step may pass
dozens of proposals over BARON's threshold 0.85, the next none), so by default its proposals are replaced, for
bag sampling only, by --confident fixed boxes per image at objectness 0.95, standing in for a trained RPN's:
every step then draws around the same boxes and the 6 ground-truth ones (`bags_per_image` in the output;
--confident -1 keeps the random RPN's own proposals).

BARON's parts are timed by wrapping the functions its method module calls (this process only): bag sampling
(`sample_bags`), crops (`crop_resize_normalize`), teacher image tower (`Teacher.encode_image_and_dense`), text
tower forward (`encode_word_sequences`) and backward (autograd hooks on its input and outputs: from the first
output gradient to the input's; approximate, the engine may interleave other nodes), losses (`bag_loss`,
`single_region_loss`); `rest` is the step less these (student, RPN, box head, ViLD-text loss, optimizer).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from workloads.train_steps import NUM_CLASSES, REGIONS, random_batch, time_steps

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "vild": "configs/ov_coco/vild_r50_fpn_lsj.yaml",
    "baron": "configs/ov_coco/baron_r50_fpn_lsj.yaml",
}
DIM = 512  # ViT-B/32's embedding width
PARTS = (
    "bag_sampling",
    "crops",
    "teacher_image_tower",
    "text_tower_forward",
    "text_tower_backward",
    "losses",
)


class _Timers:
    """Seconds spent in the wrapped functions (CUDA: synchronised around each call) and the last step's crops."""

    def __init__(self, device: str):
        self.sync = device == "cuda"
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.on = False
        self.crop_calls: list[tuple] = []  # (image, spans, step) of the latest step
        self.step = 0
        self.sequences = 0
        self.words = 0
        self._grad_out: float | None = None

    def _now(self) -> float:
        if self.sync:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def wrap(self, part: str, fn, before=None, after=None):
        def timed(*args, **kwargs):
            if before is not None:
                before(args, kwargs)
            t0 = self._now()
            out = fn(*args, **kwargs)
            dt = self._now() - t0
            if self.on:
                self.seconds[part] += dt
            if after is not None:
                after(args, out)
            return out

        return timed

    def install(self, confident: list | None) -> None:
        """Wrap what `distill.methods.baron.method` calls (the method's own code is untouched). `confident`:
        per image, (C, 4) boxes that replace the RPN's proposals with objectness 0.95 (None: the RPN's own)."""
        from distill.methods.baron import method
        from distill.teacher.teacher import Teacher

        original = method.sample_bags
        sample, calls = original, {"step": -1, "image": 0}
        if confident is not None:

            def sample(boxes, scores, image_hw, generator, cfg, gt_boxes=None):
                # the RPN's proposals are replaced (a random RPN's objectness drifts with the steps, and with it
                # the number of bags), so every step draws around the same boxes; calls come image by image
                if calls["step"] != self.step:
                    calls.update(step=self.step, image=0)
                c = confident[calls["image"]].to(boxes)
                calls["image"] += 1
                return original(c, c.new_full((c.shape[0],), 0.95), image_hw, generator, cfg, gt_boxes)

        def crops_before(args, kwargs):
            if self.crop_calls and self.crop_calls[-1][2] != self.step:
                self.crop_calls = []  # keep the latest step's only
            self.crop_calls.append((args[0], args[1], self.step))

        def text_after(args, out):
            words = args[1]
            if self.on:
                self.sequences += words.shape[0]
                self.words += int(args[2].sum())
            outs = out if isinstance(out, tuple) else (out,)
            for o in outs:
                if o.requires_grad:
                    o.register_hook(self._output_grad)
            if words.requires_grad:
                words.register_hook(self._input_grad)

        method.sample_bags = self.wrap("bag_sampling", sample)
        method.crop_resize_normalize = self.wrap("crops", method.crop_resize_normalize, before=crops_before)
        method.encode_word_sequences = self.wrap(
            "text_tower_forward", method.encode_word_sequences, after=text_after
        )
        method.bag_loss = self.wrap("losses", method.bag_loss)
        method.single_region_loss = self.wrap("losses", method.single_region_loss)
        Teacher.encode_image_and_dense = self.wrap("teacher_image_tower", Teacher.encode_image_and_dense)

    def _output_grad(self, grad):
        if self._grad_out is None:
            self._grad_out = self._now()

    def _input_grad(self, grad):
        if self._grad_out is not None and self.on:
            self.seconds["text_tower_backward"] += self._now() - self._grad_out
        self._grad_out = None

    def spans(self) -> list[tuple]:
        """(image (3, H, W) float in [0, 1], spans (B, 4)) of each image of the latest step."""
        return [(img, boxes) for img, boxes, _ in self.crop_calls]


def _crops_benchmark(spans: list[tuple], teacher, min_seconds: float = 1.0) -> dict:
    """Crops per second: the fused resampler (all spans of an image at once) against a per-bag loop of
    roi_align at the box's own size + F.interpolate to the teacher's input, and one batched roi_align straight to
    the input size (ovdet's own path), all normalised with the teacher's mean / std."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    from distill.teacher.crops import crop_resize_normalize

    size = teacher.input_size
    mean = torch.tensor(teacher.mean).view(1, 3, 1, 1)
    std = torch.tensor(teacher.std).view(1, 3, 1, 1)

    def fused():
        for img, boxes in spans:
            crop_resize_normalize(img, boxes, size, teacher.mean, teacher.std, geometry="stretch")

    def loop():
        for img, boxes in spans:
            for b in boxes.tolist():
                h, w = max(1, round(b[3] - b[1])), max(1, round(b[2] - b[0]))
                roi = torch.tensor([[0.0, *b]], dtype=img.dtype, device=img.device)
                c = roi_align(img[None], roi, (h, w), 1.0, sampling_ratio=2, aligned=True)
                c = F.interpolate(c, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                _ = (c - mean.to(c)) / std.to(c)

    def batched():
        for img, boxes in spans:
            rois = torch.cat([boxes.new_zeros((boxes.shape[0], 1)), boxes], 1).to(img)
            c = roi_align(img[None], rois, (size, size), 1.0, sampling_ratio=2, aligned=True)
            _ = (c - mean.to(c)) / std.to(c)

    n = sum(b.shape[0] for _, b in spans)
    out = {"crops_per_step": n}
    for name, fn in (("fused", fused), ("loop", loop), ("roi_align_batched", batched)):
        fn()  # warm-up
        reps, t0 = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            if reps >= 3 and time.perf_counter() - t0 >= min_seconds:
                break
        if spans and spans[0][0].device.type == "cuda":
            torch.cuda.synchronize()
        out[f"{name}_crops_per_s"] = n * reps / (time.perf_counter() - t0)
    out["fused_over_loop"] = out["fused_crops_per_s"] / out["loop_crops_per_s"]
    out["fused_over_roi_align_batched"] = out["fused_crops_per_s"] / out["roi_align_batched_crops_per_s"]
    return out


def _confident(size: int, batch: int, n: int, seed: int):
    """Per image, (n, 4) boxes standing in for a trained RPN's confident proposals: sides 5 % to 40 % of the
    image, aspect within BARON's filter."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for _ in range(batch):
        wh = size * (0.05 + 0.35 * torch.rand(n, 2, generator=g))
        xy = torch.rand(n, 2, generator=g) * (size - wh)
        out.append(torch.cat([xy, xy + wh], 1))
    return out


def child(variant: str, size: int, batch: int, steps: int, device: str, confident: int) -> dict:
    """One variant's seconds per step, peak memory and (BARON) parts, crops and teacher forwards."""
    import torch
    import torch.nn.functional as F

    from distill.config import load_config
    from distill.integrations.torchvision.builders import build_detector
    from distill.integrations.torchvision.engine.solver import build_optimizer
    from distill.ops.resample_crops import compiled_for as resample_crops_compiled
    from distill.teacher.embeddings import ClassEmbeddings

    torch.manual_seed(0)
    opts = [
        "MODEL.BACKBONE.WEIGHTS",
        "",
        "MODEL.DISTILL.TEACHER.PRETRAINED",
        "none",
        "MODEL.MASK_ON",
        "False",
    ]
    opts += ["SOLVER.IMS_PER_BATCH", str(batch), "MODEL.DEVICE", device]
    if variant == "vild":
        opts += ["MODEL.DISTILL.VILD.NUM_DISTILL_PROPOSALS", str(REGIONS)]
    cfg = load_config(str(REPO / VARIANTS[variant]), opts)
    timers = _Timers(device)
    if variant == "baron":
        timers.install(_confident(size, batch, confident, 0) if confident >= 0 else None)
    names = [f"class {i}" for i in range(NUM_CLASSES)]
    vocab = ClassEmbeddings(F.normalize(torch.randn(NUM_CLASSES, DIM), dim=1), names, {})
    model = build_detector(cfg, vocab).to(device).train()
    optimizer = build_optimizer(cfg, model)
    data = random_batch(size, batch, DIM, variant == "vild", 0)
    counts = {}

    def before_step(k: int) -> None:
        if k == 1:  # the timed steps start: their parts and counts only
            timers.on = True
            counts.update(
                {n: int(v) for n, v in model.named_buffers() if n.endswith(("teacher_crops", "images_seen"))}
            )
        timers.step = k

    seconds, peak = time_steps(model, optimizer, data, steps, device, before_step)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = {"s_per_step": seconds, "peak_bytes": peak, "trainable_params": trainable}
    if variant == "vild":
        from distill.teacher.regions import dump_region_embeddings

        # the store's crops: NUM_DISTILL_PROPOSALS boxes x the dump's scales (ViLD: 1.0 and 1.5), offline
        scales = inspect.signature(dump_region_embeddings).parameters["scales"].default
        out["teacher_scales"] = list(scales)
        out["teacher_forwards_per_image"] = int(cfg.MODEL.DISTILL.VILD.NUM_DISTILL_PROPOSALS) * len(scales)
        return out
    baron = next(m for m in model.modules() if type(m).__name__ == "BARON")
    # the timed steps' counts (the untimed first step's are subtracted)
    images = int(baron.images_seen) - next(v for k, v in counts.items() if k.endswith("images_seen"))
    crops = int(baron.teacher_crops) - next(v for k, v in counts.items() if k.endswith("teacher_crops"))
    parts = {p: s / steps for p, s in timers.seconds.items()}
    parts["rest"] = seconds - sum(parts.values())
    out["parts_s_per_step"] = parts
    out["parts_share"] = {p: s / seconds for p, s in parts.items()}
    out["teacher_forwards_per_image"] = crops / images
    out["bags_per_image"] = out["teacher_forwards_per_image"]  # one crop per bag
    out["images_without_bags"] = int(baron.images_without_bags)
    out["text_sequences_per_step"] = timers.sequences / steps
    out["pseudo_words_per_step"] = timers.words / steps
    teacher = baron.teacher
    out["teacher_s_per_crop"] = parts["teacher_image_tower"] * steps / max(crops, 1)
    out["crops"] = _crops_benchmark(timers.spans(), teacher)
    out["crops"]["fused_kernel_compiled"] = bool(resample_crops_compiled(torch.device(device)))
    return out


def _finite(x) -> bool:
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    return not isinstance(x, float) or math.isfinite(x)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="square training image side (default 512)")
    p.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one untimed (default 5)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--confident",
        type=int,
        default=10,
        help="BARON: confident proposals per image (objectness 0.95, fixed boxes) in place of the random RPN's; "
        "bags are drawn around them and the 6 ground-truth boxes (default 10; -1: the random RPN's own)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="only the JSON line")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.size, a.batch, a.steps, a.device, a.confident)))
        return 0
    results = {}
    for v in VARIANTS:
        cmd = [sys.executable, __file__, "--child", v, "--size", str(a.size), "--batch", str(a.batch)]
        cmd += ["--steps", str(a.steps), "--device", a.device, "--confident", str(a.confident)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            return r.returncode
        results[v] = json.loads(r.stdout.strip().splitlines()[-1])
    vild, baron = results["vild"], results["baron"]
    summary = {
        "step_ratio_to_vild": baron["s_per_step"] / vild["s_per_step"],
        "memory_ratio_to_vild": baron["peak_bytes"] / vild["peak_bytes"],
        "goal_step_ratio_at_most": 2.0,
        "crops_fused_over_loop": baron["crops"]["fused_over_loop"],
        "goal_crops_ratio_at_least": 5.0,
        "teacher_forwards_per_image_baron": baron["teacher_forwards_per_image"],
        "teacher_forwards_per_image_vild": vild["teacher_forwards_per_image"],
        # ViLD's are offline, once per dataset image; BARON's online, every time an image is seen
        "teacher_forwards_ratio_vild_to_baron": vild["teacher_forwards_per_image"]
        / max(baron["teacher_forwards_per_image"], 1e-12),
    }
    if not a.json:
        print(
            f"training step, {a.batch} x {a.size} px, {a.device}, threads {os.environ.get('OMP_NUM_THREADS')}:\n"
        )
        print("| variant | s / step | x ViLD | peak memory | x ViLD |\n|---|---|---|---|---|")
        for v, r in results.items():
            print(
                f"| {v} | {r['s_per_step']:.2f} | {r['s_per_step'] / vild['s_per_step']:.2f} | "
                f"{r['peak_bytes'] / 2**30:.2f} GiB | {r['peak_bytes'] / vild['peak_bytes']:.2f} |"
            )
        print(f"\nBARON's step ({baron['bags_per_image']:.1f} bags / image):\n\n| part | s / step | share |")
        print("|---|---|---|")
        for part, s in baron["parts_s_per_step"].items():
            print(f"| {part} | {s:.3f} | {baron['parts_share'][part]:.1%} |")
        c = baron["crops"]
        print(f"\ncrops ({c['crops_per_step']} per step, stretched to the teacher's input):\n")
        print("| path | crops / s |\n|---|---|")
        for name in ("fused", "loop", "roi_align_batched"):
            print(f"| {name} | {c[f'{name}_crops_per_s']:.0f} |")
        print(f"\nfused / loop: {c['fused_over_loop']:.1f}x (goal >= 5)")
        print(
            f"teacher image-tower forwards per training image: BARON {baron['teacher_forwards_per_image']:.1f} "
            f"online (every visit), ViLD {vild['teacher_forwards_per_image']} offline "
            f"({REGIONS} boxes x scales {vild['teacher_scales']}, once per image)"
        )
    line = {"size": a.size, "batch": a.batch, "steps": a.steps, "device": a.device, "confident": a.confident}
    line.update(threads=os.environ.get("OMP_NUM_THREADS"), summary=summary, results=results)
    if not _finite(line):
        print("non-finite number in the results", file=sys.stderr)
        return 1
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
