"""The command-line parser of every app: options generated from frozen dataclass configs.

simple-parsing (installed with tensorflow-datasets) turns each dataclass field into one option
``--field-name`` (nested dataclasses' fields too, by their own name), its attribute docstring
into the help text, ``bool`` fields into ``--flag``/``--noflag`` and tuples into space-separated
values. Errors are one-line :class:`~automedsam_jax.io.errors.UsageError`\\ s, which the apps
print without a traceback (exit 2).
"""

from __future__ import annotations

import simple_parsing as sp

from .errors import UsageError


class ArgumentParser(sp.ArgumentParser):
    """simple-parsing's parser (see the module docstring) whose errors raise :class:`UsageError`
    naming the option and pointing to ``--help``."""

    def __init__(self, prog: str, description: str = "", **kwargs):
        super().__init__(prog=prog, description=description, add_config_path_arg=False,
                         add_option_string_dash_variants=sp.DashVariant.DASH,
                         formatter_class=sp.SimpleHelpFormatter, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (python {self.prog} --help lists the options)")
