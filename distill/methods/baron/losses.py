"""BARON's contrastive losses and the queue of past embeddings they use as extra negatives.

Followed (wusize/ovdet):
- `ovdet/methods/baron/baron_kd.py:BaronKD.get_losses`: the bag term (`loss_bag`) and the single-region term
  (`loss_single`) are the same masked symmetric InfoNCE: 0.5 CE(scale * student @ [teacher; teacher queue]^T)
  + 0.5 CE(scale * teacher @ [student; student queue]^T), labels on the diagonal; in the current batch a key
  sharing the query's pair id (bag: `seq_ids`, the other word orders of the same bag; single region: `box_ids`,
  the same neighbour cell of the same kept box in other groups and orders) is masked with -inf; in the queue a
  key from the query's image is masked. Scales: bag 30 (COCO) / 20 (LVIS), single 50 / 30; weights 1.0 and 0.1
  (`configs/baron/ov_*/baron_kd_*.py`: `bag_temp`, `single_temp`, `bag_weight`, `single_weight`). The queues are
  read before this batch is pushed (`self.queues.dequeue_and_enqueue` comes after both losses).
- `ovdet/methods/queues.py:Queues`: four queues of 1,024 entries (`clip_text_features`, `clip_image_features`,
  `clip_word_features`, `clip_patch_features`: student and teacher side of each term), image id stored with each
  embedding, entries with a negative id ignored, at most `length` of a push kept (the first ones).

Where this differs:
- `TeacherQueue` keeps its entries in registered (persistent) buffers, so the queue is in the checkpoint and a
  resumed run continues with the same negatives; the official buffers are `persistent=False` (empty on resume).
  It is a ring buffer with a pointer (the official code concatenates, newest first); the order of keys does not
  change the loss. The same class serves as the student-side queue (the official code has one per side and term).
- Negative image ids are refused (DistillInputError) rather than silently dropped: -1 marks an empty slot.
- Inputs are L2-normalised here (the official callers pass normalised features; normalising twice is a no-op),
  and the logits are computed in float32 (the official text features are cast to float; -inf masking in fp16
  under autocast is avoided).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.errors import DistillInputError

__all__ = ["TeacherQueue", "bag_loss", "contrastive_loss", "single_region_loss"]

Queue = tuple[torch.Tensor, torch.Tensor]  # (Q, D) embeddings, (Q,) int64 image ids


def _directional(
    queries: torch.Tensor,
    keys: torch.Tensor,
    scale: float,
    pair_mask: torch.Tensor | None,
    image_ids: torch.Tensor | None,
    queue: Queue | None,
) -> torch.Tensor:
    n = queries.shape[0]
    logits = scale * queries @ keys.t()  # (N, N)
    if pair_mask is not None:
        logits = logits.masked_fill(pair_mask, float("-inf"))
    if queue is not None and queue[0].shape[0] > 0:
        q_emb, q_ids = queue
        extra = scale * queries @ F.normalize(q_emb.to(queries), dim=-1).t()  # (N, Q)
        extra = extra.masked_fill(image_ids[:, None] == q_ids.to(image_ids.device)[None], float("-inf"))
        logits = torch.cat([logits, extra], 1)
    return F.cross_entropy(logits, torch.arange(n, device=queries.device))


def contrastive_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    scale: float,
    *,
    image_ids: torch.Tensor | None = None,
    pair_ids: torch.Tensor | None = None,
    teacher_queue: Queue | None = None,
    student_queue: Queue | None = None,
) -> torch.Tensor:
    """Masked symmetric InfoNCE (official `BaronKD.get_losses`), a scalar.

    Args:
        student: (N, D) student embeddings; teacher: (N, D) the teacher's, row i the positive of row i.
        scale: logit scale (1 / temperature).
        image_ids: (N,) int64 image of each row; needed with a queue (queue keys of the row's image are masked).
        pair_ids: (N,) rows sharing an id are not each other's negatives (the diagonal stays); None: no mask.
        teacher_queue: (Q, D) past teacher embeddings and (Q,) their image ids, extra keys of the student queries.
        student_queue: (Q', D) past student embeddings and their image ids, extra keys of the teacher queries.
    """
    if student.dim() != 2 or student.shape != teacher.shape:
        raise DistillInputError(
            f"BARON loss: student and teacher must be the same (N, D), got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}"
        )
    n = student.shape[0]
    for name, ids in (("image_ids", image_ids), ("pair_ids", pair_ids)):
        if ids is not None and ids.shape != (n,):
            raise DistillInputError(f"BARON loss: {name} must be ({n},), got {tuple(ids.shape)}")
    if image_ids is None and (teacher_queue is not None or student_queue is not None):
        raise DistillInputError("BARON loss: a queue needs image_ids (its same-image keys are masked)")
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    pair_mask = None
    if pair_ids is not None:
        pair_mask = pair_ids[:, None] == pair_ids[None]
        pair_mask.fill_diagonal_(False)
    return 0.5 * _directional(s, t, scale, pair_mask, image_ids, teacher_queue) + 0.5 * _directional(
        t, s, scale, pair_mask, image_ids, student_queue
    )


def bag_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    image_ids: torch.Tensor,
    bag_ids: torch.Tensor,
    scale: float = 30.0,
    teacher_queue: Queue | None = None,
    student_queue: Queue | None = None,
) -> torch.Tensor:
    """The bag term (official `loss_bag`, before its weight 1.0): one row per word order of a bag.

    student: (N, D) the text tower's embedding of each bag sequence; teacher: (N, D) the image tower's embedding of
    its bag's crop; image_ids: (N,); bag_ids: (N,) the bag each sequence comes from (its other orders are no
    negatives); scale 30 COCO, 20 LVIS."""
    return contrastive_loss(
        student,
        teacher,
        scale,
        image_ids=image_ids,
        pair_ids=bag_ids,
        teacher_queue=teacher_queue,
        student_queue=student_queue,
    )


def single_region_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    image_ids: torch.Tensor,
    region_ids: torch.Tensor,
    scale: float = 50.0,
    teacher_queue: Queue | None = None,
    student_queue: Queue | None = None,
) -> torch.Tensor:
    """The single-region term (official `loss_single`, before its weight 0.1): one row per region per sequence.

    student: (M, D) mean of the region's kept word tokens at the text tower's output; teacher: (M, D) the crop's
    patch tokens pooled over the region (roi_align 1 x 1 of the box normalised to the bag); region_ids: (M,) the
    same (kept box, grid cell) in several groups or orders shares an id (no negatives of each other); scale 50
    COCO, 30 LVIS."""
    return contrastive_loss(
        student,
        teacher,
        scale,
        image_ids=image_ids,
        pair_ids=region_ids,
        teacher_queue=teacher_queue,
        student_queue=student_queue,
    )


class TeacherQueue(nn.Module):
    """FIFO of the last `length` embeddings and their image ids, in buffers (so in the training state and the
    checkpoint). Used for the teacher side (and, as in the official code, a second one for the student side).

    Buffers: embeddings (Q, D) float32; image_ids (Q,) int64, -1 for an empty slot; ptr () int64, the next slot.
    """

    def __init__(self, dim: int, length: int = 1024):
        super().__init__()
        if dim < 1 or length < 1:
            raise DistillInputError(f"TeacherQueue: dim and length must be >= 1, got {dim} and {length}")
        self.register_buffer("embeddings", torch.zeros(length, dim))
        self.register_buffer("image_ids", torch.full((length,), -1, dtype=torch.int64))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))

    @property
    def length(self) -> int:
        return self.embeddings.shape[0]

    def __len__(self) -> int:
        return int((self.image_ids >= 0).sum())

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor, image_ids: torch.Tensor) -> None:
        """Append (n, D) embeddings and (n,) image ids (>= 0), dropping the oldest; of a push longer than the
        queue only the first `length` rows are kept (official `Queues.dequeue_and_enqueue`)."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embeddings.shape[1]:
            raise DistillInputError(
                f"TeacherQueue.push: embeddings must be (n, {self.embeddings.shape[1]}), got "
                f"{tuple(embeddings.shape)}"
            )
        if image_ids.shape != embeddings.shape[:1]:
            raise DistillInputError(
                f"TeacherQueue.push: image_ids must be ({embeddings.shape[0]},), got {tuple(image_ids.shape)}"
            )
        if (image_ids < 0).any():
            raise DistillInputError("TeacherQueue.push: image ids must be >= 0 (-1 marks an empty slot)")
        n = min(embeddings.shape[0], self.length)
        if n == 0:
            return
        slots = (int(self.ptr) + torch.arange(n, device=self.ptr.device)) % self.length
        self.embeddings[slots] = embeddings[:n].detach().to(self.embeddings)
        self.image_ids[slots] = image_ids[:n].to(self.image_ids)
        self.ptr.fill_((int(self.ptr) + n) % self.length)

    def get(self) -> Queue:
        """The stored entries, oldest first: (q, D) embeddings and (q,) image ids, q = len(self)."""
        order = (self.ptr + torch.arange(self.length, device=self.ptr.device)) % self.length
        order = order[self.image_ids[order] >= 0]
        return self.embeddings[order], self.image_ids[order]
