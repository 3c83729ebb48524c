"""BARON (Wu et al., CVPR 2023, "Aligning Bag of Regions for Open-Vocabulary Object Detection"; wusize/ovdet).

Torch-level pieces only so far, not registered as a method yet: bag sampling (`sampling`), the bag and
single-region contrastive losses with their queue (`losses`), the boxes' sine positional encoding (`positional`).
"""
