"""The one error type of the data layer: a bad input file, named together with its problem."""

from __future__ import annotations

from pathlib import Path


class BadInputError(ValueError):
    """An input file that cannot be used: ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
