from .poolers import MultiScaleRoIPooler, boxes_to_rois  # noqa: F401
