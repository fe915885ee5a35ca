"""The command-line parser of every app: options generated from frozen dataclass configs.

simple-parsing (a dependency in pyproject.toml) turns each dataclass field into one option
``--field-name`` (nested dataclasses' fields too, by their own name), its attribute docstring
into the help text, ``bool`` fields into ``--flag``/``--noflag`` and tuples into space-separated
values. Errors are one-line :class:`~automedsam_jax.io.errors.UsageError`\\ s, which the apps
print without a traceback (exit 2): argparse's, and the ``ValueError`` of a config's own check
(its ``__post_init__``).
"""

from __future__ import annotations

import logging
import sys

import simple_parsing as sp

from .errors import UsageError


class ArgumentParser(sp.ArgumentParser):
    """simple-parsing's parser (see the module docstring) whose errors raise :class:`UsageError`
    naming the option and pointing to ``--help``."""

    def __init__(self, prog: str, description: str = "", **kwargs):
        """``prog``: what follows ``python`` on the command line (``train.py``,
        ``-m automedsam_jax.predict``)."""
        super().__init__(prog=f"python {prog}", description=description,
                         add_config_path_arg=False,
                         add_option_string_dash_variants=sp.DashVariant.DASH,
                         formatter_class=sp.SimpleHelpFormatter, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} ({self.prog} --help lists the options)")

    def parse_known_args(self, *args, **kwargs):
        try:
            return super().parse_known_args(*args, **kwargs)
        except UsageError:
            raise
        except ValueError as e:  # a config's check (its __post_init__)
            raise UsageError(str(e)) from None


def configure_logging() -> None:
    """Let the project's own log lines through on stderr (INFO and up: the readers' counts of
    unlabelled cases, the builder's per-split counts, skipped files), which the apps call first.
    They go to the root logger's stream handler when one is installed (Orbax installs one at
    import), else to a plain one of the ``automedsam_jax`` logger; other libraries' loggers are
    left as they are."""
    logger = logging.getLogger("automedsam_jax")
    logger.setLevel(logging.INFO)
    shown = any(type(h) is logging.StreamHandler for h in logging.getLogger().handlers)
    if not shown and not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())


class _StderrHandler(logging.StreamHandler):
    """A message-only handler on whatever ``sys.stderr`` is when a record comes."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass
