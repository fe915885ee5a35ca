"""An :class:`Evaluation` written out: ``metrics.json``, ``metrics.csv`` and ``table.md``.

* ``metrics.json`` — ``run`` (what was evaluated), the NSD settings, ``per_dataset`` (the means
  over classes), ``per_class`` (by name, with its id and the number of cases it was scored on)
  and ``per_case`` (slices, spacing, per class), and the time taken. Scores are fractions in
  [0, 1]; ``null`` where a class was never evaluated; ``presence``: the (slice, class) counts,
  precision, recall and accuracy of the presence decisions and the ``min_area`` used. With
  HD95 (``--hd95``) each class and case also has ``hd95`` (mm / px). A dataset with regions
  (BraTS) adds ``regions``: per region (``WT``, ``TC``, ``ET``) its class ids, ``cases``, the
  means ``dsc``, ``hd95`` (mm), ``sensitivity``, ``specificity``, ``nsd`` (and ``lesion_dsc``,
  ``lesion_hd95`` with ``--lesion-wise``) and the same keys under ``median`` and ``std``; each
  ``per_case`` entry has its ``regions``.
* ``metrics.csv`` — one row per case and evaluated class: ``case_id, class_id, class_name, dsc,
  nsd, hd95`` (fractions; hd95 empty unless scored), then one row per case and region with the
  region's name as ``class_name``, ``class_id`` empty and its ``sensitivity, specificity,
  lesion_dsc, lesion_hd95`` in the last columns.
* ``table.md`` — the paper's layout (Tables 2 and 3): one column per class plus the mean, rows
  DSC (%) and NSD (%) (and HD95), three decimals; ``–`` for a class no case contained or
  predicted; then one line with the presence precision/recall over (slice, class) pairs; then,
  for a dataset with regions, BraTS's table: one row per region, Dice (%) and HD95 (mm) as
  mean ± std and median, sensitivity, specificity and NSD (%) means.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

from ..core.regions import LESION_METRICS
from ..io.paths import AnyPath, as_path
from .evaluator import Evaluation


CSV_SCORES = ("dsc", "nsd", "hd95", "sensitivity", "specificity", *LESION_METRICS)
"""The score columns of ``metrics.csv``, after ``case_id, class_id, class_name``."""


def _number(x: float) -> float | None:
    return None if math.isnan(x) else x


def nsd_units(ev: Evaluation) -> str:
    """``"mm"`` when the cases are volumes (NSD with their spacing), else ``"px"``."""
    return "mm" if any(c.spacing is not None for c in ev.cases) else "px"


def to_json(ev: Evaluation, dataset: str, meta: dict) -> dict:
    """The ``metrics.json`` content (see the module docstring); ``meta`` describes the run."""
    names = ev.class_names
    per_class = {}
    for c, name in enumerate(names, start=1):
        s = ev.metrics.per_class.get(c)
        per_class[name] = {"id": c, "dsc": s.dsc if s else None, "nsd": s.nsd if s else None,
                           "cases": s.cases if s else 0}
        if s and s.hd95 is not None:
            per_class[name]["hd95"] = s.hd95
    ids = dict(ev.region_classes)
    regions = {name: {"classes": list(ids.get(name, ())), "cases": r.cases, **r.mean,
                      "median": r.median, "std": r.std} for name, r in ev.regions.items()}

    def class_scores(m) -> dict:
        return {"dsc": m.dsc, "nsd": m.nsd, **({"hd95": m.hd95} if m.hd95 is not None else {})}

    return {
        "run": meta,
        "tolerance": ev.tolerance, "nsd_units": nsd_units(ev), "challenge_nsd": ev.challenge_nsd,
        "class_names": {str(c): name for c, name in enumerate(names, start=1)},
        "per_dataset": {dataset: {"dsc": _number(ev.metrics.dsc), "nsd": _number(ev.metrics.nsd),
                                  "cases": len(ev.cases), "slices": ev.num_slices}},
        "per_class": per_class,
        "per_case": [{"case_id": r.case_id, "slices": r.num_slices,
                      "spacing": list(r.spacing) if r.spacing else None, "complete": r.complete,
                      "classes": {names[c - 1]: class_scores(m)
                                  for c, m in sorted(r.scores.items())},
                      **({"regions": {k: _present(m) for k, m in r.regions.items()}}
                         if r.regions else {})}
                     for r in ev.cases],
        **({"regions": regions} if regions else {}),
        "presence": {**ev.presence.to_dict(), "min_area": ev.min_area},
        "seconds": ev.seconds,
        "slices_per_second": ev.num_slices / ev.seconds if ev.seconds > 0 else None,
    }


def _present(m) -> dict:
    """A dataclass's fields that hold a value."""
    return {k: v for k, v in vars(m).items() if v is not None}


def region_table(ev: Evaluation) -> list[str]:
    """BraTS's table of the regions (module docstring); no lines when there are none."""
    if not ev.regions:
        return []
    lesion = any("lesion_dsc" in r.mean for r in ev.regions.values())
    head = ["region", "cases", "Dice (%) mean ± std", "Dice median", "HD95 (mm) mean ± std",
            "HD95 median", "sensitivity (%)", "specificity (%)", "NSD (%)"]
    head += ["lesion-wise Dice (%)", "lesion-wise HD95 (mm)"] if lesion else []
    lines = ["", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in ev.regions.items():
        m, md, sd = r.mean, r.median, r.std
        cells = [name, str(r.cases), f"{100 * m['dsc']:.2f} ± {100 * sd['dsc']:.2f}",
                 f"{100 * md['dsc']:.2f}", f"{m['hd95']:.2f} ± {sd['hd95']:.2f}",
                 f"{md['hd95']:.2f}", f"{100 * m['sensitivity']:.2f}",
                 f"{100 * m['specificity']:.2f}", f"{100 * m['nsd']:.2f}"]
        cells += [f"{100 * m['lesion_dsc']:.2f}", f"{m['lesion_hd95']:.2f}"] if lesion else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paper_table(ev: Evaluation, title: str) -> str:
    """Markdown: ``title``, then classes + mean as columns and DSC (%) / NSD (%) as rows."""
    def pct(x: float | None) -> str:
        return "–" if x is None or math.isnan(x) else f"{100 * x:.3f}"

    per = [ev.metrics.per_class.get(c) for c in range(1, len(ev.class_names) + 1)]
    lines = [f"**{title}**", "",
             "| | " + " | ".join(ev.class_names) + " | mean |",
             "|---" * (len(ev.class_names) + 2) + "|"]
    for row, attr in (("DSC (%)", "dsc"), ("NSD (%)", "nsd")):
        cells = [pct(getattr(s, attr) if s else None) for s in per]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {pct(getattr(ev.metrics, attr))} |")
    if any(s is not None and s.hd95 is not None for s in per):
        cells = ["–" if s is None or s.hd95 is None else f"{s.hd95:.3f}" for s in per]
        scored = [s.hd95 for s in per if s is not None and s.hd95 is not None]
        lines.append(f"| HD95 ({nsd_units(ev)}) | " + " | ".join(cells)
                     + f" | {sum(scored) / len(scored):.3f} |")
    p = ev.presence
    lines += ["", f"Presence over {p.pairs} (slice, class) pairs: precision {pct(p.precision)} %, "
              f"recall {pct(p.recall)} %, accuracy {pct(p.accuracy)} % "
              f"(TP {p.tp}, FP {p.fp}, FN {p.fn}, TN {p.tn}; min area {ev.min_area:.2e} of the "
              "image)."]
    lines += region_table(ev)
    return "\n".join(lines) + "\n"


def _cell(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def write_reports(ev: Evaluation, out_dir: str | os.PathLike, dataset: str, title: str,
                  meta: dict) -> dict[str, AnyPath]:
    """Write the three files into ``out_dir`` (created; a local path or a URL, :mod:`...io.paths`);
    returns their paths by kind."""
    out = as_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "csv": out / "metrics.csv", "table": out / "table.md"}
    paths["json"].write_text(json.dumps(to_json(ev, dataset, meta), indent=2) + "\n")
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["case_id", "class_id", "class_name", *CSV_SCORES])
    for r in ev.cases:
        for c, m in sorted(r.scores.items()):
            writer.writerow([r.case_id, c, ev.class_names[c - 1],
                             *(_cell(getattr(m, k, None)) for k in CSV_SCORES)])
    for r in ev.cases:
        for name, m in r.regions.items():
            writer.writerow([r.case_id, "", name, *(_cell(getattr(m, k)) for k in CSV_SCORES)])
    paths["csv"].write_text(rows.getvalue())
    paths["table"].write_text(paper_table(ev, title))
    return paths
