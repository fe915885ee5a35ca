"""Train AutoMedSAM. ``python train.py`` runs the offline demo; ``python train.py --help``."""

import sys

from automedsam_jax.train.config import from_args
from automedsam_jax.train.loop import TrainingDiverged, run


def main(argv=None) -> int:
    cfg = from_args(argv)
    try:
        run(cfg)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
