"""Evaluate AutoMedSAM (or the box-prompted MedSAM baseline). ``python evaluate.py`` scores the
demo run; ``python evaluate.py --help``."""

import sys

from automedsam_jax.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
