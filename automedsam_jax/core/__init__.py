"""The core layer: configs, the Flax models, losses, metrics and pre/post-processing.

Imports nothing else of the package (no files, no datasets): ``config`` · ``modeling/`` (SAM's
module split) · ``automedsam`` · ``init`` (shape-only and random models) · ``losses`` ·
``metrics`` · ``preprocess`` (original ⇄ input ⇄ low-res frames, boxes).
"""
