"""The command-line parser of every app: options generated from frozen dataclass configs.

simple-parsing (a dependency in pyproject.toml) turns each dataclass field into one option
``--field-name`` (nested dataclasses' fields too, by their own name), its attribute docstring
into the help text, ``bool`` fields into ``--flag``/``--no-flag`` and tuples into space-separated
values. Options renamed since the previous release keep their old spelling for one release, with
a warning naming the new one (:data:`DEPRECATED`, :func:`respell`). Errors are one-line
:class:`~automedsam_jax.io.errors.UsageError`\\ s, which the apps print without a traceback
(exit 2): argparse's, and the ``ValueError`` of a config's own check (its ``__post_init__``).
"""

from __future__ import annotations

import logging
import sys
import warnings

import simple_parsing as sp
from simple_parsing.helpers.custom_actions import BooleanOptionalAction

from .errors import UsageError

DEPRECATED = {"--width": "--localiser-width", "--widths": "--class-prompt-widths"}
"""Old option spelling → new, accepted with a warning for one release. The fields keep their
names (``LocaliserConfig.width``, ``ClassPromptConfig.widths``); their options are spelled the
new way. Also accepted with a warning: ``--noflag`` for ``--no-flag`` and the comma-separated
values of :data:`COMMA_LISTS` (``--class-prompt-widths 8,16,32``)."""
COMMA_LISTS = ("--class-prompt-widths",)
"""Options whose values the previous release took comma-separated (now space-separated)."""


def respell(argv: list[str], options) -> list[str]:
    """``argv`` with every deprecated spelling of one of ``options`` (a parser's option strings)
    respelled the new way, each with a ``FutureWarning`` (shown to users by default)."""
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        new = DEPRECATED.get(name)
        if new is None and name.startswith("--no") and not name.startswith("--no-"):
            new = "--no-" + name[4:]
        if new in options:
            _deprecated(f"{name} is deprecated and will be removed in the next release; use {new}")
            name = new
        if eq and name in COMMA_LISTS:  # --option=8,16,32
            out.append(name)
            arg = value
        elif not (out and out[-1] in COMMA_LISTS and not arg.startswith("-")):
            out.append(name + eq + value)
            continue
        if "," in arg:
            _deprecated(f"{out[-1]} {arg}: comma-separated values are deprecated and will be "
                        f"refused in the next release; separate them by spaces: "
                        f"{out[-1]} {arg.replace(',', ' ')}")
        out += [v for v in arg.split(",") if v]
    return out


def _deprecated(message: str) -> None:
    """A deprecated spelling's warning, at one location: shown once per message (Python's default
    filter), however often the command line is parsed."""
    warnings.warn(message, FutureWarning, stacklevel=1)


class _BooleanAction(BooleanOptionalAction):
    """simple-parsing's ``bool`` option with the negative spelled ``--no-flag``."""

    def __init__(self, *args, negative_prefix: str = "--no-", **kwargs):
        super().__init__(*args, negative_prefix=negative_prefix, **kwargs)


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
        self.register("action", BooleanOptionalAction, _BooleanAction)

    def _preprocessing(self, *args, **kwargs):
        """simple-parsing's (it adds the options when first needed), then the fields' options
        of :data:`DEPRECATED` spelled the new way."""
        done = self._preprocessing_done
        super()._preprocessing(*args, **kwargs)
        if done:
            return
        for old, new in DEPRECATED.items():
            action = self._option_string_actions.get(old)
            if action is not None and "." in action.dest:  # a dataclass field's option
                action.option_strings[action.option_strings.index(old)] = new
                self._option_string_actions[new] = self._option_string_actions.pop(old)

    def error(self, message: str):
        raise UsageError(f"{message} ({self.prog} --help lists the options)")

    def parse_known_args(self, args=None, namespace=None, **kwargs):
        """simple-parsing's, on ``args`` (default ``sys.argv[1:]``) :func:`respell`\\ ed."""
        self._preprocessing([] if args is None else list(args), namespace)
        args = respell(sys.argv[1:] if args is None else list(args), self._option_string_actions)
        try:
            return super().parse_known_args(args, namespace, **kwargs)
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
