"""``python -m convert`` (from a checkout): PyTorch ⇄ Flax conversion of SAM, MedSAM and
LiteMedSAM checkpoints. The command only; the conversion itself is
:mod:`automedsam_jax.io.conversion` (torch-free) and :mod:`automedsam_jax.io.torch_pickle`.
Installed, the same command is ``automedsam-convert``.
"""
