"""Deterministic train/validation/test assignment of cases.

Cases are ordered by the SHA-256 of their id (a permutation that depends on nothing but the ids,
so it is the same on every machine and in every run) and cut into contiguous parts by the
fractions. With at least 3 cases, validation and test each get at least one; with 2, test gets
one (a model trained on one case is still scored on another).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SPLITS = ("train", "validation", "test")


def split_cases(case_ids: Iterable[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                ) -> dict[str, list[str]]:
    """``{"train": [...], "validation": [...], "test": [...]}``, each list sorted by case id."""
    ids = sorted(set(case_ids), key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    n = len(ids)
    total = sum(fractions)
    n_val = max(int(n >= 3), round(n * fractions[1] / total))
    n_test = max(int(n >= 2), round(n * fractions[2] / total))
    n_train = n - n_val - n_test
    parts = ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]
    return {name: sorted(part) for name, part in zip(SPLITS, parts)}
