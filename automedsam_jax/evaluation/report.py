"""An :class:`Evaluation` written out: ``metrics.json``, ``metrics.csv`` and ``table.md``.

* ``metrics.json`` — ``run`` (what was evaluated), the NSD settings, ``per_dataset`` (the means
  over classes), ``per_class`` (by name, with its id and the number of cases it was scored on)
  and ``per_case`` (slices, spacing, per class), and the time taken. Scores are fractions in
  [0, 1]; ``null`` where a class was never evaluated; ``presence``: the (slice, class) counts,
  precision, recall and accuracy of the presence decisions and the ``min_area`` used.
* ``metrics.csv`` — one row per case and evaluated class: ``case_id, class_id, class_name, dsc,
  nsd`` (fractions).
* ``table.md`` — the paper's layout (Tables 2 and 3): one column per class plus the mean, rows
  DSC (%) and NSD (%), three decimals; ``–`` for a class no case contained or predicted; then
  one line with the presence precision/recall over (slice, class) pairs.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .evaluator import Evaluation


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
    return {
        "run": meta,
        "tolerance": ev.tolerance, "nsd_units": nsd_units(ev), "challenge_nsd": ev.challenge_nsd,
        "class_names": {str(c): name for c, name in enumerate(names, start=1)},
        "per_dataset": {dataset: {"dsc": _number(ev.metrics.dsc), "nsd": _number(ev.metrics.nsd),
                                  "cases": len(ev.cases), "slices": ev.num_slices}},
        "per_class": per_class,
        "per_case": [{"case_id": r.case_id, "slices": r.num_slices,
                      "spacing": list(r.spacing) if r.spacing else None, "complete": r.complete,
                      "classes": {names[c - 1]: {"dsc": m.dsc, "nsd": m.nsd}
                                  for c, m in sorted(r.scores.items())}}
                     for r in ev.cases],
        "presence": {**ev.presence.to_dict(), "min_area": ev.min_area},
        "seconds": ev.seconds,
        "slices_per_second": ev.num_slices / ev.seconds if ev.seconds > 0 else None,
    }


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
    p = ev.presence
    lines += ["", f"Presence over {p.pairs} (slice, class) pairs: precision {pct(p.precision)} %, "
              f"recall {pct(p.recall)} %, accuracy {pct(p.accuracy)} % "
              f"(TP {p.tp}, FP {p.fp}, FN {p.fn}, TN {p.tn}; min area {ev.min_area:.2e} of the "
              "image)."]
    return "\n".join(lines) + "\n"


def write_reports(ev: Evaluation, out_dir: str | Path, dataset: str, title: str,
                  meta: dict) -> dict[str, Path]:
    """Write the three files into ``out_dir`` (created); returns their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "csv": out / "metrics.csv", "table": out / "table.md"}
    paths["json"].write_text(json.dumps(to_json(ev, dataset, meta), indent=2) + "\n")
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "class_id", "class_name", "dsc", "nsd"])
        for r in ev.cases:
            for c, m in sorted(r.scores.items()):
                writer.writerow([r.case_id, c, ev.class_names[c - 1], f"{m.dsc:.6f}",
                                 f"{m.nsd:.6f}"])
    paths["table"].write_text(paper_table(ev, title))
    return paths
