"""The open_clip teacher: text, region and dense pixel embeddings; class-embedding files; prompt sets."""
from .crops import center_square, crop_resize_normalize, scale_boxes
from .embeddings import ClassEmbeddings
from .prompts import TEMPLATE_SETS, build_prompts
from .teacher import Teacher, check_boxes, create_teacher

__all__ = ["ClassEmbeddings", "TEMPLATE_SETS", "Teacher", "build_prompts", "center_square", "check_boxes",
           "create_teacher", "crop_resize_normalize", "scale_boxes"]
