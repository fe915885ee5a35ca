"""``python -m convert``: see :mod:`automedsam_jax.convert`."""

from automedsam_jax.convert import main

if __name__ == "__main__":
    main()
