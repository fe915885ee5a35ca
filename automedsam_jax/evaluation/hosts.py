"""Evaluation split across processes (hosts): each evaluates whole cases — case k of the split
goes to process k mod N — and the per-case scores are gathered, so N hosts take about 1/N of the
time and report exactly the scores of one process evaluating everything.

Cases are whole because 3D scores need the whole volume. A split is stored case by case in z
order (:mod:`automedsam_jax.data.builder`), so the case blocks are found by reading one record
per case (its ``depth``) where the split holds every slice, and every record's ``case_id``
otherwise (the ``train`` split stores foreground slices only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax

from ..core.distributed import allgather_json
from ..core.metrics import ClassMetrics, aggregate
from ..core.regions import RegionMetrics, summarise
from ..data.pipeline import SliceSubset, as_text
from .evaluator import CaseResult, Evaluation
from .presence import PresenceCounts


def case_blocks(source: Sequence[dict]) -> list[tuple[str, range]]:
    """``(case_id, record indices)`` of every case of a split, in stored order."""
    blocks, i, n = [], 0, len(source)
    while i < n:
        first = source[i]
        case, depth = as_text(first["case_id"]), int(first["depth"])
        end = i + depth
        if int(first["slice_index"]) == 0 and end <= n and (
                as_text(source[end - 1]["case_id"]) == case
                and int(source[end - 1]["slice_index"]) == depth - 1):
            blocks.append((case, range(i, end)))  # every slice of the case is stored
            i = end
            continue
        j = i + 1
        while j < n and as_text(source[j]["case_id"]) == case:
            j += 1
        blocks.append((case, range(i, j)))
        i = j
    return blocks


def process_share(source: Sequence[dict]) -> tuple[Sequence[dict], list[str]]:
    """This process's records (its cases: case k goes to process k mod N) and the case order of
    the whole split (for :func:`gather`). One process: the source itself."""
    if jax.process_count() == 1:
        return source, []
    blocks = case_blocks(source)
    mine = [i for k, (_, rows) in enumerate(blocks) if k % jax.process_count()
            == jax.process_index() for i in rows]
    return SliceSubset(source, mine), [case for case, _ in blocks]


def gather(ev: Evaluation, case_order: list[str]) -> Evaluation:
    """The evaluation of the whole split from every process's share (cases in ``case_order``,
    presence counts and slice counts summed, the slowest process's time)."""
    if jax.process_count() == 1:
        return ev
    parts = allgather_json({
        "cases": [[c.case_id, c.num_slices, c.spacing, c.complete,
                   {str(k): dataclasses.asdict(m) for k, m in c.scores.items()},
                   {k: dataclasses.asdict(m) for k, m in c.regions.items()}] for c in ev.cases],
        "presence": dataclasses.asdict(ev.presence), "slices": ev.num_slices,
        "seconds": ev.seconds})
    rank = {case: i for i, case in enumerate(case_order)}
    cases = sorted((CaseResult(case, n, tuple(sp) if sp else None, complete,
                               {int(k): ClassMetrics(**m) for k, m in scores.items()},
                               {k: RegionMetrics(**m) for k, m in regions.items()})
                    for part in parts
                    for case, n, sp, complete, scores, regions in part["cases"]),
                   key=lambda c: rank[c.case_id])
    presence = sum((PresenceCounts(**p["presence"]) for p in parts), PresenceCounts())
    return dataclasses.replace(ev, cases=tuple(cases),
                               metrics=aggregate(c.scores for c in cases),
                               regions=summarise([c.regions for c in cases]),
                               num_slices=sum(p["slices"] for p in parts),
                               seconds=max(p["seconds"] for p in parts), presence=presence)
