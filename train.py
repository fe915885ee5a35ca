"""Train AutoMedSAM. ``python train.py`` runs the offline demo; ``python train.py --help``."""

import sys

from automedsam_jax.io.cli import configure_logging
from automedsam_jax.io.errors import BadInputError, UsageError
from automedsam_jax.train.config import from_args
from automedsam_jax.train.loop import TrainingDiverged, run


def main(argv=None) -> int:
    """0 when trained; 2 for input the user can fix (missing or bad data, an unusable option),
    printed as one message without a traceback; 3 when the loss diverged."""
    configure_logging()
    try:
        run(from_args(argv))
    except (BadInputError, UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
