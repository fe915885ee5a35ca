"""The io layer: everything that reads or writes files, on top of :mod:`automedsam_jax.core`.

``paths`` (local paths and ``gs://`` URLs, one path type) · ``staging`` (a ``gs://`` data
directory's mirror on this host) · ``checkpoint`` (model directories) · ``rundir`` (the training
work-directory contract, finding a command's model) · ``npz`` / ``scans`` (challenge npz, NIfTI,
PNG in and out) · ``intensity`` · ``orientation`` · ``errors`` (:class:`BadInputError`) ·
``fetch`` / ``weights`` (pinned downloads, pretrained LiteMedSAM) · ``torch_pickle`` (``.pth``
without torch) · ``conversion`` / ``automedsam_conversion`` (the PyTorch ⇄ Flax tables). No
tensorflow-datasets, no grain.
"""
