"""BARON on the method interface (`distill.methods.base`): bags drawn in `step_rois`, pooled with the sampled
RoIs, distilled in `losses` against the online teacher.

Shapes: F the box head's width, W the text tower's width (token-embedding space), D the embedding width,
K = NUM_WORDS pseudo-words per region. Per step: bags b, each with n_b regions and P_b word orders; a
"sequence" is one (bag, order), a "row" one region of one sequence.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ...modeling.losses import vild_text_loss
from ...teacher.crops import crop_resize_normalize
from ...teacher.text_tower import context_length, encode_word_sequences, special_ids, text_tower
from ...utils.errors import DistillInputError
from ..base import DistillMethod, RoIBatch, StepContext
from . import KEYS, NODE
from .losses import TeacherQueue, bag_loss, single_region_loss
from .positional import BoxPositionalEncoding
from .sampling import BagSamplingConfig, sample_bags

MAX_BAG = 9  # the 3 x 3 grid: the most regions a bag holds


class BARON(DistillMethod):
    """BARON's bag-of-regions distillation with ViLD-text's classifier (see the package docstring)."""

    config_node = NODE
    config_keys = KEYS
    uses_teacher = True

    def __init__(self, options=None):
        super().__init__(options)
        # the process's seed (the trainers seed it with SEED before building the model; read here, before the
        # teacher is made), saved with the model: the draws are a function of it and of the step
        self.register_buffer("draw_seed", torch.tensor(torch.initial_seed() % 2**31, dtype=torch.int64))

    def build(self, feature_dim: int, embed_dim: int) -> None:
        model = self.teacher.model
        tower = text_tower(model)  # one line for a teacher whose text tower takes no embeddings
        self.num_words = int(self.option("NUM_WORDS"))
        if self.num_words != self.option("NUM_WORDS"):
            raise DistillInputError(
                f"MODEL.DISTILL.BARON.NUM_WORDS must be a whole number, got {self.option('NUM_WORDS')}"
            )
        need, have = MAX_BAG * self.num_words + 2, context_length(model)
        if need > have:
            raise DistillInputError(
                f"MODEL.DISTILL.BARON.NUM_WORDS {self.num_words}: a bag of {MAX_BAG} regions needs {need} text "
                f"positions, the teacher's text tower has {have} (at most {(have - 2) // MAX_BAG} words)"
            )
        width = int(tower.token_embedding.weight.shape[1])
        self.word_dim = width
        self.sot, self.eot = special_ids(self.teacher.tokenizer)
        self.word_proj = nn.Linear(feature_dim, self.num_words * width)
        self.positional = BoxPositionalEncoding(self.num_words, width)
        length = int(self.option("QUEUE_LENGTH"))
        dim = self.teacher.dim
        self.queues = nn.ModuleDict(
            {
                k: TeacherQueue(dim, length)
                for k in ("bag_student", "bag_teacher", "single_student", "single_teacher")
            }
        )
        # in the checkpoint: the draws of a resumed run continue from its seed and step; the counts feed the
        # benchmark
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("images_without_bags", torch.zeros((), dtype=torch.int64))
        self.register_buffer("teacher_crops", torch.zeros((), dtype=torch.int64))
        self.sampling = BagSamplingConfig(
            topk=int(self.option("TOPK")),
            objectness_thr=float(self.option("OBJECTNESS_THRESHOLD")),
            nms_thr=float(self.option("NMS_THRESHOLD")),
            max_groups=int(self.option("MAX_GROUPS")),
            max_permutations=int(self.option("MAX_PERMUTATIONS")),
        )

    # ---------------------------------------------------------------- bags
    def _generator(self) -> torch.Generator:
        """This step's draws: a function of the seed, the step and the process's rank, so a resumed run draws
        what the uninterrupted one would."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return torch.Generator().manual_seed((int(self.draw_seed) * 1_000_003 + int(self.step)) * 1024 + rank)

    def step_rois(self, context: StepContext) -> list[torch.Tensor] | None:
        if not self.training:
            return None
        if context.images is None or context.objectness is None or context.proposals is None:
            raise DistillInputError(
                "MODEL.DISTILL.METHOD baron needs the step's images and RPN proposals with their objectness: "
                "this backend's RoI heads did not hand them over"
            )
        g = self._generator()
        self.step += 1
        max_bags = int(self.option("MAX_BAGS"))
        per_image, boxes = [], []
        for i, (props, scores, image) in enumerate(
            zip(context.proposals, context.objectness, context.images)
        ):
            gt = context.gt_boxes[i] if self.option("USE_GT") and context.gt_boxes is not None else None
            bags = sample_bags(props, scores, tuple(image.shape[-2:]), g, self.sampling, gt)
            if max_bags:
                bags = bags[:max_bags]
            per_image.append(bags)
            boxes.append(torch.cat([b.boxes for b in bags]) if bags else props.new_zeros((0, 4)))
        self.images_seen += len(per_image)
        self.images_without_bags += sum(1 for b in per_image if not b)
        context.state["baron_bags"] = per_image
        context.state["baron_generator"] = g
        return boxes

    # ---------------------------------------------------------------- losses
    def losses(self, batch: RoIBatch) -> dict[str, torch.Tensor]:
        losses = {"loss_cls": vild_text_loss(batch.logits, batch.labels)}
        ctx = batch.context
        bags = None if ctx is None else ctx.state.get("baron_bags")
        if not bags or not any(bags) or batch.extra_features is None or batch.extra_features.shape[0] == 0:
            # no bag this step: the rest still trains; the method's parameters join the graph (DDP)
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            losses["loss_bag"] = zero
            if self.option("SINGLE_WEIGHT") > 0:
                losses["loss_single"] = zero
            return losses
        plan = self._plan(bags, ctx.image_ids, batch.extra_features.device)
        student_bag, student_single = self._student_embeddings(
            batch.extra_features, plan, ctx.state["baron_generator"]
        )
        teacher_bag, teacher_single = self._teacher_embeddings(ctx, bags, plan)
        q = self.queues
        losses["loss_bag"] = self.option("BAG_WEIGHT") * bag_loss(
            student_bag,
            teacher_bag,
            plan["seq_image"],
            plan["seq_bag"],
            self.option("BAG_SCALE"),
            q["bag_teacher"].get(),
            q["bag_student"].get(),
        )
        if student_single is not None:
            losses["loss_single"] = self.option("SINGLE_WEIGHT") * single_region_loss(
                student_single,
                teacher_single,
                plan["row_image"],
                plan["row_region"],
                self.option("SINGLE_SCALE"),
                q["single_teacher"].get(),
                q["single_student"].get(),
            )
        # pushed after both terms read the queues (official order)
        q["bag_student"].push(F.normalize(student_bag.detach().float(), dim=-1), plan["seq_image"])
        q["bag_teacher"].push(teacher_bag, plan["seq_image"])
        if student_single is not None:
            q["single_student"].push(F.normalize(student_single.detach().float(), dim=-1), plan["row_image"])
            q["single_teacher"].push(teacher_single, plan["row_image"])
        return losses

    def _plan(self, bags: list[list], image_ids: torch.Tensor | None, device) -> dict[str, torch.Tensor]:
        """Index tensors of the step's sequences and rows (all on `device`):
        region (R,) the pooled box (row of `extra_features`) of each row, rows sequence-major;
        row_seq (R,) its sequence; row_image (R,) its image id; row_region (R,) the (kept box, grid cell) id;
        row_bag (R,) its bag; normed (R, 4) its box in the bag's [0, 1] frame;
        seq_bag (S,) / seq_image (S,) each sequence's bag and image id; n_bags."""
        region, row_seq, row_region, row_bag, normed, seq_bag, seq_image = [], [], [], [], [], [], []
        offset, bag_index, kept_offset = 0, 0, 0
        for i, image_bags in enumerate(bags):
            iid = int(image_ids[i]) if image_ids is not None else i
            for bag in image_bags:
                n = bag.boxes.shape[0]
                for perm in bag.permutations.tolist():
                    s = len(seq_bag)
                    seq_bag.append(bag_index)
                    seq_image.append(iid)
                    for j in perm:
                        region.append(offset + j)
                        row_seq.append(s)
                        row_region.append((kept_offset + bag.source) * 9 + int(bag.cells[j]))
                        row_bag.append(bag_index)
                        normed.append(bag.normed_boxes[j])
                offset += n
                bag_index += 1
            kept_offset += 1 + max((b.source for b in image_bags), default=-1)
        long = dict(dtype=torch.int64, device=device)
        plan = {
            "region": torch.tensor(region, **long),
            "row_seq": torch.tensor(row_seq, **long),
            "row_region": torch.tensor(row_region, **long),
            "row_bag": torch.tensor(row_bag, **long),
            "seq_bag": torch.tensor(seq_bag, **long),
            "seq_image": torch.tensor(seq_image, **long),
            "normed": torch.stack(normed).to(device).float(),
            "n_bags": bag_index,
        }
        plan["row_image"] = plan["seq_image"][plan["row_seq"]]
        return plan

    def _student_embeddings(self, features: torch.Tensor, plan: dict, g: torch.Generator):
        """(M, F) features of the bags' boxes → (S, D) bag embeddings and (R, D) region embeddings (None when
        SINGLE_WEIGHT is 0), both unnormalised, with gradients to the word projection and the features."""
        k, w = self.num_words, self.word_dim
        words = self.word_proj(features).view(-1, k, w)[plan["region"]]  # (R, K, W)
        words = words + self.positional(plan["normed"]).to(words.dtype)
        keep = torch.ones(words.shape[:2], dtype=torch.bool, device=words.device)
        p = float(self.option("WORD_DROPOUT"))
        if p > 0:
            keep = torch.rand(words.shape[:2], generator=g).to(words.device) >= p
            keep[~keep.any(1), 0] = True  # a region keeps at least its first word (official `_drop_word`)
        # kept words packed per sequence, in row order: (S, L, W) and lengths (S,)
        row_of_word = torch.arange(words.shape[0], device=words.device)[:, None].expand_as(keep)[keep]
        seq_of_word = plan["row_seq"][row_of_word]
        n_seq = int(plan["seq_bag"].shape[0])
        lengths = torch.bincount(seq_of_word, minlength=n_seq)
        starts = torch.cumsum(lengths, 0) - lengths
        pos = torch.arange(seq_of_word.shape[0], device=words.device) - starts[seq_of_word]
        packed = words.new_zeros((n_seq, int(lengths.max()), w)).index_put((seq_of_word, pos), words[keep])
        single = self.option("SINGLE_WEIGHT") > 0
        out = encode_word_sequences(
            self.teacher.model, packed, lengths, self.sot, self.eot, return_tokens=single
        )
        if not single:
            return out, None
        bag_emb, tokens = out
        # a region's embedding: the mean of its kept words' tokens
        word_tokens = tokens[seq_of_word, pos].float()  # (kept, D)
        sums = word_tokens.new_zeros((words.shape[0], word_tokens.shape[1])).index_add(
            0, row_of_word, word_tokens
        )
        return bag_emb, sums / keep.sum(1, keepdim=True).to(sums)

    @torch.no_grad()
    def _teacher_embeddings(self, ctx: StepContext, bags: list[list], plan: dict):
        """The teacher's (S, D) bag embeddings (each bag's spanning box cropped from its image, RGB whatever the
        backend's channel order, stretched to the teacher's input, one crop per bag) and (R, D) region
        embeddings (its dense features of the crop pooled over the region), L2-normalised, float32."""
        t = self.teacher
        crops = []
        for i, image_bags in enumerate(bags):
            if not image_bags:
                continue
            img = ctx.rgb_image(i, t.device) / 255.0
            spans = torch.stack([b.spanned_box for b in image_bags]).to(img.device)
            crops.append(crop_resize_normalize(img, spans, t.input_size, t.mean, t.std, geometry="stretch"))
        crops = torch.cat(crops)
        self.teacher_crops += crops.shape[0]
        amp = crops.device.type == "cuda" and self.option("TEACHER_AMP")
        with torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext():
            emb, dense = t.encode_image_and_dense(crops, cls_residual=True)
        emb, dense = emb.float(), dense.float()
        teacher_bag = emb[plan["seq_bag"]]
        if self.option("SINGLE_WEIGHT") <= 0:
            return teacher_bag, None
        h, w = dense.shape[-2:]
        scale = plan["normed"].new_tensor([w, h, w, h])
        rois = torch.cat([plan["row_bag"][:, None].float(), plan["normed"] * scale], 1)
        pooled = roi_align(dense, rois.to(dense), 1, 1.0, sampling_ratio=2, aligned=True).flatten(1)
        return teacher_bag, F.normalize(pooled, dim=-1)
