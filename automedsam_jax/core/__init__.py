"""The core layer: configs, the Flax models, losses, metrics and pre/post-processing.

Imports nothing else of the package (no files, no datasets): ``config`` · ``modeling/`` (SAM's
module split) · ``automedsam`` · ``init`` (shape-only and random models) · ``losses`` ·
``metrics`` · ``preprocess`` (original ⇄ input ⇄ low-res frames, boxes) · ``backend`` (the
per-platform formulations, the attention choice and their switches) · ``pipelining`` (dispatch
the next item before collecting this one) · ``distributed``.
"""
