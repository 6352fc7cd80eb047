"""Automatic segmentation: the trained segmenter, baselines, metrics and the block planner."""
