"""Default config of the torchvision backend, in detectron2's idiom (`detectron2/config/defaults.py`): one yacs
tree with a comment per key, and a key's valid range beside its default (`_C.SOLVER.MAX_ITER = _positive(90000)`:
`load_config` refuses a value out of it in one line; `KEY_RANGES` collects them). Every key of `_C` is
detectron2's (same name, same meaning, same default unless `tests/test_config.py` lists it), so one yaml serves
both backends. The keys detectron2 has not are written under `_A` (`ADDED_DEFAULTS`): the distillation settings
(MODEL.DISTILL) and the training-loop, input and dataset settings detectron2 has no key for, each beside
detectron2's own keys of its kind (SOLVER.OPTIMIZER, INPUT.LSJ, DATASETS.ROOT, ...); `add_distill_config` adds
them to detectron2's config. The method's own keys (MODEL.DISTILL.<NODE>) come from the method registry
(`distill.methods`).
"""

from __future__ import annotations

from fvcore.common.config import CfgNode

from ..utils.errors import RANGES

_RANGES_OF: dict[int, dict[str, str]] = {}  # id(node) → {key: range kind}, while the defaults are written


class CN(CfgNode):
    """The defaults' node while they are written: a `_Ranged` value sets its default and notes its range (yacs
    takes plain values only); the finished trees are copied into fvcore CfgNodes at the end of this file."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, _Ranged):
            _RANGES_OF.setdefault(id(self), {})[name] = value.kind
            value = value.value
        super().__setattr__(name, value)


class _Ranged:
    """A default with its valid range (a `distill.utils.errors.RANGES` kind)."""

    __slots__ = ("value", "kind")

    def __init__(self, value, kind: str):
        assert kind in RANGES, kind
        self.value, self.kind = value, kind


def _positive(value) -> _Ranged:
    return _Ranged(value, "positive")


def _nonneg(value) -> _Ranged:
    return _Ranged(value, "nonneg")


def _unit(value) -> _Ranged:
    return _Ranged(value, "unit")


def _ranges(node: CfgNode, prefix: str = "") -> dict[str, str]:
    """{dotted key: range kind} of the ranged defaults under `node`."""
    out = {prefix + k: kind for k, kind in _RANGES_OF.get(id(node), {}).items()}
    for k, v in node.items():
        if isinstance(v, CfgNode):
            out.update(_ranges(v, f"{prefix}{k}."))
    return out


def add_keys(cfg: CfgNode, keys: CfgNode) -> CfgNode:
    """Put every key of the tree `keys` into `cfg` with its value, making the nodes `cfg` lacks (of `cfg`'s own
    CfgNode class: yacs merges a yaml only into nodes of its class)."""
    for k, v in keys.items():
        if isinstance(v, CfgNode):
            if k not in cfg:
                cfg[k] = type(cfg)()
            add_keys(cfg[k], v)
        else:
            cfg[k] = v
    return cfg


# ---------------------------------------------------------------- keys detectron2 has not (both backends)
_A = CN()
_A.MODEL = CN()
_A.MODEL.BACKBONE = CN()
# backbone initialisation: "imagenet" (torchvision backend: torchvision's weights; detectron2 backend: MSRA
# R-{50,101}.pkl with its BGR normalisation, when MODEL.WEIGHTS is empty), a file (torchvision), or "" (scratch)
_A.MODEL.BACKBONE.WEIGHTS = "imagenet"
# MODEL.BACKBONE.NAME build_clip_fpn_backbone (F-VLM, F-ViT: the teacher's frozen tower): for a ViT teacher, the
# four blocks whose outputs make the pyramid (empty: 3, 5, 7, 11 of 12 blocks, else evenly spaced)
_A.MODEL.BACKBONE.CLIP_VIT_BLOCKS = []
_A.MODEL.ROI_HEADS = CN()
# detectron2 backend: the box and mask heads pool ROIAlign / ROIAlignV2 with distill.ops (FusedROIPooler)
# instead of detectron2's ROIPooler (the torchvision backend does not read it)
_A.MODEL.ROI_HEADS.FUSED_POOLER = True

_A.MODEL.DISTILL = CN()  # the distillation settings
_D = _A.MODEL.DISTILL
# the distillation method (distill.methods: vild_text, vild, vild_ensemble, or one registered by IMPORTS); its
# keys live under its own node (MODEL.DISTILL.VILD for the ViLD methods), added with their defaults on
# registration
_D.METHOD = "vild"
# modules imported before the config is read, so that the methods they register (and their keys) are known:
# dotted module names, or .py files (relative to the config file's folder, else the working directory)
_D.IMPORTS = ()
_D.TEACHER = CN()
_D.TEACHER.ARCH = "ViT-B-32"  # open_clip architecture or model-zoo teacher name
_D.TEACHER.PRETRAINED = "openai"  # open_clip pretrained tag or a checkpoint file
_D.TEACHER.TEMPLATES = "vild"  # prompt templates of the class texts (distill.teacher.prompts)
# class embeddings files (C, D) with sidecars: training vocabulary (base) and test vocabulary (all)
_D.TRAIN_CLASS_EMBEDDINGS = ""
_D.TEST_CLASS_EMBEDDINGS = ""
_D.TEMPERATURE = _positive(0.01)  # logits = cosine / temperature (ViLD: 0.01)
_D.BG_INIT_STD = _nonneg(0.01)  # the learned background embedding starts as N(0, std) (ViLD)
_D.PIXEL_LOSS_WEIGHT = _nonneg(1.0)  # segmenter: pixel distillation to the teacher's dense targets
_D.PIXEL_LOSS = "l1"  # "l1" or "cosine"

_D.SEM_SEG = CN()  # the open-vocabulary semantic segmenter (both backends read these keys)
# Panoptic FPN semantic branch on P2-P5 → a D-dim embedding per pixel at 1 / COMMON_STRIDE
_D.SEM_SEG.CONVS_DIM = 64
_D.SEM_SEG.COMMON_STRIDE = 4
_D.SEM_SEG.NORM = "GN"
_D.SEM_SEG.IGNORE_VALUE = 255  # pixel value never scored
# cross entropy on base-class pixels (pixel distillation: MODEL.DISTILL.PIXEL_*)
_D.SEM_SEG.LOSS_WEIGHT = _nonneg(1.0)
# pixel value of each class of the training / test vocabulary, in vocabulary order (() = 0..C-1), and of
# the background (-1: the dataset has no background class, no background embedding is scored)
_D.SEM_SEG.TRAIN_LABEL_VALUES = ()
_D.SEM_SEG.TEST_LABEL_VALUES = ()
_D.SEM_SEG.BACKGROUND_VALUE = 0
# dense teacher targets: "windows" (sliding-window crops painted back), "pixels" (MaskCLIP encode_pixels) or
# "regions" (crops of the class-agnostic boxes in PROPOSALS, COCO-results json, painted back)
_D.SEM_SEG.DENSE_TARGETS = "pixels"
_D.SEM_SEG.DENSE_TARGET_STRIDE = 8  # targets at 1 / stride of the image
_D.SEM_SEG.PIXELS_INPUT_SCALE = 2.0  # "pixels": the teacher sees the image this much larger
_D.SEM_SEG.WINDOW_SIZES = (32, 48, 64)  # "windows": square crop sizes
_D.SEM_SEG.WINDOW_STRIDE = 16  # "windows": step between crops
_D.SEM_SEG.DENSE_TARGET_CACHE = ""  # folder of cached targets ("" = computed online from the frozen teacher)
# distill cells labelled background too (off: the teacher's targets there drag a class onto the background)
_D.SEM_SEG.DISTILL_BACKGROUND = False
_D.SEM_SEG.PROPOSALS = (
    ""  # "regions": boxes per training image (MODEL.DISTILL.VILD.NUM_DISTILL_PROPOSALS best each)
)
# "regions": paint from this region-embedding store (the ViLD step's, same teacher, scales and geometry)
# instead of cropping again; its boxes replace PROPOSALS for the images it holds
_D.SEM_SEG.REGION_STORE = ""

_A.DATASETS = CN()
# folder of the datasets (synthetic/, coco/, lvis/ as datasets/README.md lays out); "": $DISTILL_DATASETS, else
# ./datasets
_A.DATASETS.ROOT = ""

_A.INPUT = CN()
# large-scale jitter (training): resized by a random factor of a SIZE x SIZE square, then cropped to it (ViLD,
# detectron2's LSJ baselines: 1024, 0.1-2.0); replaces INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN on both backends
_A.INPUT.LSJ = CN()
_A.INPUT.LSJ.ENABLED = False
_A.INPUT.LSJ.SIZE = _positive(1024)
_A.INPUT.LSJ.MIN_SCALE = _positive(0.1)
_A.INPUT.LSJ.MAX_SCALE = _positive(2.0)

_A.SOLVER = CN()
_A.SOLVER.OPTIMIZER = "SGD"  # or "AdamW" (SOLVER.MOMENTUM and NESTEROV are SGD's)
# iterations between metrics lines (metrics.json, log.txt, progress) of the torchvision backend's training
# loop; detectron2's DefaultTrainer writes every 20
_A.SOLVER.LOG_PERIOD = _positive(20)
# periodic checkpoints (SOLVER.CHECKPOINT_PERIOD) kept: the newest N, 0 keeps all; model_final always stays
_A.SOLVER.CHECKPOINT_MAX_TO_KEEP = _nonneg(0)

# ---------------------------------------------------------------- the torchvision backend's full config
_C = CN()
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # or "OpenVocabRCNN" (the same detector)
_C.MODEL.DEVICE = "cpu"
_C.MODEL.WEIGHTS = ""  # checkpoint (or distill:// model-zoo name) to start from
_C.MODEL.MASK_ON = True
_C.MODEL.PIXEL_MEAN = (123.675, 116.28, 103.53)  # in INPUT.FORMAT channel order, 0-255
_C.MODEL.PIXEL_STD = (58.395, 57.12, 57.375)

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"  # the only backbone of this backend
_C.MODEL.BACKBONE.FREEZE_AT = 2  # 0 trains everything, 1 freezes the stem, k the stem and res2..res{k}

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34, 50, 101 or 152
_C.MODEL.RESNETS.NORM = "FrozenBN"  # FrozenBN, BN or GN
_C.MODEL.RESNETS.OUT_FEATURES = ("res2", "res3", "res4", "res5")
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # read by detectron2; torchvision's ResNets fix it by depth
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True  # read by detectron2 (MSRA weights); torchvision strides in the 3x3

_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = ("res2", "res3", "res4", "res5")
_C.MODEL.FPN.OUT_CHANNELS = 256
_C.MODEL.FPN.NORM = ""

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.SIZES = ((32,), (64,), (128,), (256,), (512,))  # one tuple per FPN level
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = ((0.5, 1.0, 2.0),)  # one tuple for all levels, or one per level

_C.MODEL.PROPOSAL_GENERATOR = CN()
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"

_C.MODEL.RPN = CN()
_C.MODEL.RPN.IN_FEATURES = ("p2", "p3", "p4", "p5", "p6")
# anchors with IoU < IOU_THRESHOLDS[0] are negatives, >= IOU_THRESHOLDS[1] positives, in between ignored
_C.MODEL.RPN.IOU_THRESHOLDS = (0.3, 0.7)
_C.MODEL.RPN.IOU_LABELS = (
    0,
    -1,
    1,
)  # the label of each IoU interval (detectron2's; this backend reads no other)
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = _positive(2000)  # per FPN level
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = _positive(1000)
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = _positive(1000)  # per image
_C.MODEL.RPN.POST_NMS_TOPK_TEST = _positive(1000)
_C.MODEL.RPN.NMS_THRESH = _unit(0.7)
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = _positive(256)  # anchors sampled per image for the RPN losses
_C.MODEL.RPN.POSITIVE_FRACTION = _unit(0.5)

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "OpenVocabROIHeads"
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80  # not read: the vocabulary's size is the number of classes
_C.MODEL.ROI_HEADS.IN_FEATURES = ("p2", "p3", "p4", "p5")
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = _positive(512)  # RoIs sampled per image
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = _unit(0.25)
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = (0.5,)  # foreground at IoU >= 0.5
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = _unit(0.05)
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = _unit(0.5)

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # 0: adaptive
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True  # ViLD: boxes for classes never seen in training
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0  # 0: L1

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True  # ViLD: one mask for any class

_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()  # registered dataset names (distill.data.catalog)
_C.DATASETS.TEST = ()

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = _nonneg(2)  # mapping processes (0: in the training process)
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"  # or RepeatFactorTrainingSampler (LVIS), as detectron2
_C.DATALOADER.REPEAT_THRESHOLD = 0.0

_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # one picked at random per image
_C.INPUT.MAX_SIZE_TRAIN = _positive(1333)
_C.INPUT.MIN_SIZE_TEST = _nonneg(800)
_C.INPUT.MAX_SIZE_TEST = _positive(1333)
_C.INPUT.RANDOM_FLIP = "horizontal"  # or "none"
_C.INPUT.FORMAT = "RGB"  # this backend reads RGB only

_C.SOLVER = CN()
_C.SOLVER.BASE_LR = _positive(0.02)
_C.SOLVER.MOMENTUM = _nonneg(0.9)  # SGD
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = _nonneg(1e-4)
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # of normalisation layers' parameters
_C.SOLVER.WEIGHT_DECAY_BIAS = None  # of biases (None: WEIGHT_DECAY)
_C.SOLVER.IMS_PER_BATCH = _positive(16)  # over all processes
_C.SOLVER.MAX_ITER = _positive(90000)
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # or "WarmupCosineLR"
_C.SOLVER.STEPS = (60000, 80000)  # WarmupMultiStepLR: iterations where the rate is multiplied by GAMMA
_C.SOLVER.GAMMA = _positive(0.1)
_C.SOLVER.WARMUP_ITERS = _nonneg(1000)  # linear warmup from WARMUP_FACTOR × BASE_LR
_C.SOLVER.WARMUP_FACTOR = _unit(0.001)
_C.SOLVER.CHECKPOINT_PERIOD = _positive(5000)  # iterations between periodic checkpoints
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"  # "value", "norm" (each parameter) or "full_model" (all together)
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # mixed precision (GPU only)

_C.TEST = CN()
_C.TEST.EVAL_PERIOD = _nonneg(0)  # iterations between evaluations during training (0: none)
_C.TEST.DETECTIONS_PER_IMAGE = _positive(100)
# detectron2's test-time augmentation keys; the segmenter reads ENABLED and FLIP (average of the image's and
# its mirror's class probabilities), the torchvision detector has no TTA
_C.TEST.AUG = CN()
_C.TEST.AUG.ENABLED = False
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
_C.TEST.AUG.MAX_SIZE = 4000
_C.TEST.AUG.FLIP = True

_C.OUTPUT_DIR = "./output"
_C.SEED = -1  # < 0: seed 0

KEY_RANGES: dict[str, str] = {**_ranges(_A), **_ranges(_C)}  # dotted key → RANGES kind
_RANGES_OF.clear()
ADDED_DEFAULTS = CfgNode(_A)  # plain fvcore nodes from here on
_C = add_keys(CfgNode(_C), ADDED_DEFAULTS.clone())
del _A, _D
