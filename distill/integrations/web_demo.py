"""The Gradio web demo: open-vocabulary detection (boxes, masks, a table) and semantic segmentation, on any
vocabulary typed in the page (encoded by each model's teacher, cached per vocabulary).
Torchvision-only: it runs the torchvision backend's detector and segmenter, not through the Backend protocol
(it feeds in-memory images); a detectron2 checkpoint is refused in one line (tools/demo.py runs its detectors).

    app = build_app(DemoModels(det_cfg, det_weights, seg_cfg, seg_weights))
    app.launch(...)   # tools/web_demo.py
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..teacher.domain import check_names, training_world
from ..teacher.embeddings import ClassEmbeddings
from ..utils.errors import DistillInputError
from .torchvision.mapper import resized_hw

logger = logging.getLogger(__name__)
DEFAULT_VOCABULARY = "circle, square, triangle, star, crescent"
TABLE_HEADERS = ["class", "score", "x0", "y0", "x1", "y1"]
MAX_ROWS = 50
# the Detection tab's methods: the trained detector, or the teacher alone on class-agnostic proposals
# (ViLD's "CLIP on cropped regions": no detector needed with selective search)
METHODS = {
    "trained detector": None,
    "teacher on selective-search proposals (no training)": "selective-search",
    "teacher on the detector's RPN proposals": "rpn",
}


def parse_names(text: str) -> list[str]:
    """ "a, b,c" → ["a", "b", "c"]; empty or repeated names are an error."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        raise DistillInputError("empty vocabulary: type class names separated by commas")
    if len(set(names)) != len(names):
        raise DistillInputError("a class name appears twice in the vocabulary")
    return names


QUICKSTART_CONFIG = "synthetic/vild_r18_fpn_quick.yaml"
TORCHVISION_ONLY = (
    "the web demo runs torchvision-backend models only (tools/demo.py runs a detectron2 detector)"
)


def demo_configs(args) -> tuple[object, object | None]:
    """(detector config, segmenter config or None) of tools/web_demo.py's checkpoints: each checked to be of
    its kind and of this backend, its config the one it carries unless --config-file / --semseg-config."""
    from .inference import inference_config

    if not args.weights:  # zero-shot only: the config names the teacher
        from ..config import load_config
        from ..model_zoo import get_config_file

        det_cfg = load_config(args.config_file or get_config_file(QUICKSTART_CONFIG), args.opts)
    else:
        det_cfg, _ = inference_config(
            args.weights, "detector", args.config_file, args.opts, torchvision_only=TORCHVISION_ONLY
        )
    if not args.semseg_weights:
        return det_cfg, None
    if not os.path.isfile(args.semseg_weights):
        raise DistillInputError(
            'segmenter weights not found: pass --semseg-weights, or --semseg-weights "" for no segmentation',
            args.semseg_weights,
        )
    seg_cfg, _ = inference_config(
        args.semseg_weights,
        "segmenter",
        args.semseg_config,
        flag="--semseg-weights",
        config_flag="--semseg-config",
        torchvision_only=TORCHVISION_ONLY,
    )
    return det_cfg, seg_cfg


@dataclass
class DemoModels:
    """Configs and checkpoints of the two tabs; the models and teachers load on first use."""

    det_cfg: object
    det_weights: str
    seg_cfg: object | None = None
    seg_weights: str | None = None
    _cache: dict = field(default_factory=dict)

    def _teacher(self, tcfg):
        from ..teacher import create_teacher

        key = ("teacher", tcfg.ARCH, tcfg.PRETRAINED)
        if key not in self._cache:
            self._cache[key] = create_teacher(tcfg.ARCH, tcfg.PRETRAINED or None)
        return self._cache[key]

    def vocabulary(self, cfg, text: str) -> ClassEmbeddings:
        names = parse_names(text)
        t = cfg.MODEL.DISTILL.TEACHER
        key = ("vocab", t.ARCH, t.PRETRAINED, t.TEMPLATES, tuple(names))
        if key not in self._cache:
            teacher = self._teacher(t)
            emb = teacher.encode_text(names, t.TEMPLATES).cpu()
            self._cache[key] = ClassEmbeddings(emb, names, {**teacher.provenance(), "templates": t.TEMPLATES})
        return self._cache[key]

    def zero_shot(self, proposals: str, classes: torch.Tensor):
        """The teacher of the detector's config scoring (C, D) `classes` on `proposals` ("selective-search" or
        "rpn": the detector's RPN)."""
        from ..modeling.zero_shot import ZeroShotConfig, ZeroShotDetector, selective_search_proposer
        from .zero_shot import DEFAULT_OBJECTNESS_WEIGHT, rpn_proposer

        key = ("proposer", proposals)
        if key not in self._cache:
            if proposals == "rpn":
                self._cache[key] = rpn_proposer("torchvision", None, self.detector(), self.det_cfg, 300)
            else:
                self._cache[key] = selective_search_proposer()
        teacher = self._teacher(self.det_cfg.MODEL.DISTILL.TEACHER)
        cfg = ZeroShotConfig(objectness_weight=DEFAULT_OBJECTNESS_WEIGHT[proposals])
        return ZeroShotDetector(teacher, classes, self._cache[key], cfg)

    def detector(self, vocabulary: ClassEmbeddings | None = None):
        """The detector, built for `vocabulary` (default: the page's default one) on first use: the training
        class embeddings are not read, the checkpoint alone is enough."""
        if "det" not in self._cache:
            from .shared import building_with
            from .torchvision.trainer import load_trained_model

            if not self.det_weights or not os.path.isfile(self.det_weights):
                raise DistillInputError(
                    "detector weights not found (run `make quickstart` or pass --weights)", self.det_weights
                )
            vocabulary = vocabulary or self.vocabulary(self.det_cfg, DEFAULT_VOCABULARY)
            with building_with(vocabulary):
                self._cache["det"] = load_trained_model(self.det_cfg, self.det_weights).eval()
        return self._cache["det"]

    def segmenter(self, dim: int):
        if "seg" not in self._cache:
            from .torchvision.sem_seg import load_segmenter

            if not self.seg_weights or not os.path.isfile(self.seg_weights):
                raise DistillInputError(
                    "segmenter weights not found (run `make quickstart` or pass --semseg-weights)",
                    self.seg_weights,
                )
            aug = self.seg_cfg.TEST.AUG if self.seg_cfg is not None else None  # --semseg-config's, if given
            flip = None if aug is None else bool(aug.ENABLED and aug.FLIP)
            self._cache["seg"] = load_segmenter(self.seg_weights, dim, flip).eval()
        return self._cache["seg"]


@torch.no_grad()
def detect(
    models: DemoModels, rgb: np.ndarray, text: str, threshold: float, method: str = "trained detector"
):
    """(H, W, 3) uint8 → (drawn (H', W', 3) uint8, table rows [class, score, x0, y0, x1, y1]); `method` one of
    METHODS."""
    from .drawing import render

    if method not in METHODS:
        raise DistillInputError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    cfg = models.det_cfg
    vocab = models.vocabulary(cfg, text)
    h0, w0 = rgb.shape[:2]
    if METHODS[method] is not None:
        zero_shot = models.zero_shot(METHODS[method], vocab.embeddings)
        det = zero_shot(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous())
    else:
        model = models.detector(vocab)
        model.roi_heads.set_vocabulary(vocab)
        h, w = resized_hw(h0, w0, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()[None]
        if (h, w) != (h0, w0):
            image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)
        det = model([{"image": image[0], "scale": (h / h0, w / w0), "height": h0, "width": w0}])[0]
    drawn = render(rgb, det, vocab.class_names, None, threshold, scale=max(1, 512 // max(h0, w0)))
    above = torch.where(det["scores"] >= threshold)[0]
    keep = above[:MAX_ROWS]
    rows = [
        [vocab.class_names[int(c)], round(float(s), 3), *[round(float(v), 1) for v in b]]
        for b, s, c in zip(det["boxes"][keep], det["scores"][keep], det["labels"][keep])
    ]
    return drawn, rows, detection_summary(len(above), threshold, vocab.class_names)


def detection_summary(n: int, threshold: float, names: list[str]) -> str:
    """The line above the table: how many detections, or why there is nothing to see."""
    if n:
        return f"{n} detection(s) with score >= {threshold:g}" + (
            f" (the best {MAX_ROWS} listed)" if n > MAX_ROWS else ""
        )
    return (
        f"no detection above the threshold {threshold:g} for the vocabulary {', '.join(names)}: "
        "lower the threshold or name other classes"
    )


@torch.no_grad()
def segment(models: DemoModels, rgb: np.ndarray, text: str):
    """(H, W, 3) uint8 → (coloured segmentation, its legend apart (the picture's toolbar would cover a legend
    drawn in its corner), rows [class, % of pixels])."""
    from ..utils.visualize_semseg import render_legend, render_semseg
    from .torchvision.sem_seg import predict_sem_seg

    if models.seg_cfg is None:
        raise DistillInputError("no segmenter given (--semseg-weights)")
    vocab = models.vocabulary(models.seg_cfg, text)
    model = models.segmenter(vocab.dim)
    model.predictor.set_vocabulary(vocab, list(range(1, len(vocab) + 1)))
    legend = ["background"] + vocab.class_names if model.predictor.background else [""] + vocab.class_names
    pred = predict_sem_seg(model, [torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)])[0].numpy()
    drawn = render_semseg(rgb, pred, legend, scale=max(1, 512 // max(rgb.shape[:2])), legend_on=False)
    values, counts = np.unique(pred, return_counts=True)
    key = render_legend(legend, set(values.tolist()), 0 if model.predictor.background else None)
    rows = [[legend[v], round(100.0 * n / pred.size, 1)] for v, n in zip(values.tolist(), counts.tolist())]
    return drawn, key, sorted(rows, key=lambda r: -r[1])


def world_note(cfg) -> str | None:
    """The page's note when the model's teacher knows only a narrow (synthetic) world; None for a real one."""
    t = cfg.MODEL.DISTILL.TEACHER
    world = training_world(t.ARCH, t.PRETRAINED or None)
    if world is None:
        return None
    return (
        f"**Note:** these models come from `{world.label}`, trained only on {world.domain} "
        f"({', '.join(world.classes)}): they recognise nothing in real photos, and other words get scores that "
        "mean nothing. For real photos use a real CLIP teacher (see MODEL_ZOO.md)."
    )


def vocabulary_note(cfg, text: str) -> str | None:
    """The warning for typed names outside what the model's teacher was trained on (None: all inside)."""
    t = cfg.MODEL.DISTILL.TEACHER
    return check_names(training_world(t.ARCH, t.PRETRAINED or None), parse_names(text))


def _noted(cfg, fn):
    """fn(image, text, ...) that first shows the vocabulary's warning in the page."""
    import gradio as gr

    def run(*args):
        if cfg is not None and (note := vocabulary_note(cfg, args[1])):
            gr.Warning(note, duration=None)  # stays until closed: the scores below are meaningless
        return fn(*args)

    return run


def _guard(fn):
    """Input errors become a message in the page (gr.Error), not a stack trace."""
    import gradio as gr

    def wrapped(*args):
        if args[0] is None:
            raise gr.Error("upload an image first")
        try:
            return fn(*args)
        except DistillInputError as e:
            raise gr.Error(str(e)) from None

    return wrapped


def build_app(models: DemoModels):
    """The Gradio Blocks app: a Detection tab and a Semantic segmentation tab."""
    import gradio as gr

    with gr.Blocks(
        title="distill: open-vocabulary detection and segmentation", analytics_enabled=False
    ) as app:
        gr.Markdown(
            "## distill: open-vocabulary detection and segmentation\n"
            "Upload an image, type the classes to look for (comma separated), run."
        )
        if note := world_note(models.det_cfg):
            gr.Markdown(note, elem_id="teacher-note")
        with gr.Tab("Detection"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="numpy", label="image", elem_id="det-image", sources=["upload"])
                    vocab = gr.Textbox(
                        DEFAULT_VOCABULARY, label="vocabulary (comma separated)", elem_id="det-vocab"
                    )
                    thresh = gr.Slider(
                        0.0, 1.0, value=0.3, step=0.01, label="score threshold", elem_id="det-thresh"
                    )
                    method = gr.Radio(
                        list(METHODS), value="trained detector", label="method", elem_id="det-method"
                    )
                    run = gr.Button("Detect", variant="primary", elem_id="det-run")
                with gr.Column():
                    drawn = gr.Image(
                        type="numpy", label="detections", elem_id="det-result", interactive=False
                    )
                    status = gr.Markdown(elem_id="det-status")
                    table = gr.Dataframe(
                        headers=TABLE_HEADERS, label="detections", elem_id="det-table", interactive=False
                    )
            run.click(
                _guard(_noted(models.det_cfg, lambda *a: detect(models, *a))),
                [image, vocab, thresh, method],
                [drawn, table, status],
            )
        with gr.Tab("Semantic segmentation"):
            with gr.Row():
                with gr.Column():
                    s_image = gr.Image(type="numpy", label="image", elem_id="seg-image", sources=["upload"])
                    s_vocab = gr.Textbox(
                        DEFAULT_VOCABULARY, label="vocabulary (comma separated)", elem_id="seg-vocab"
                    )
                    s_run = gr.Button("Segment", variant="primary", elem_id="seg-run")
                with gr.Column():
                    s_drawn = gr.Image(
                        type="numpy", label="segmentation", elem_id="seg-result", interactive=False
                    )
                    s_legend = gr.Image(  # apart, with no toolbar or label over it
                        type="numpy",
                        label="legend",
                        elem_id="seg-legend",
                        interactive=False,
                        show_label=False,
                        container=False,
                        buttons=[],
                    )
                    s_table = gr.Dataframe(
                        headers=["class", "% of pixels"],
                        label="classes",
                        elem_id="seg-table",
                        interactive=False,
                    )
            s_run.click(
                _guard(_noted(models.seg_cfg, lambda *a: segment(models, *a))),
                [s_image, s_vocab],
                [s_drawn, s_legend, s_table],
            )
    return app


def launch(app, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve `app` with system fonts (no font download) and without server-side rendering."""
    import gradio as gr

    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    return app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        theme=theme,
        ssr_mode=False,
        quiet=True,
        show_error=True,
    )
