"""The errors a user can fix: a bad input file (named with its problem) and an unusable setting."""

from __future__ import annotations

from pathlib import Path


class BadInputError(ValueError):
    """An input file that cannot be used: ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UsageError(ValueError):
    """A command-line value or setting that cannot work (an unknown dataset, a batch size the
    devices cannot split, ...): ``str(err)`` says which and what to do. Commands print it without
    a traceback."""
