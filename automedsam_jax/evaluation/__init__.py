"""Evaluation of AutoMedSAM and of the box-prompted MedSAM baseline against labels
(``python evaluate.py``), on the model runs of :mod:`automedsam_jax.inference`.

volumes.py (slices → cases, prediction and ground truth) · evaluator.py (DSC/NSD per case,
class and dataset) · report.py (JSON, CSV, paper-style Markdown) · presence.py (is a class on a
slice: calibration and counts) · hosts.py (cases split across processes) · cli.py (the
command). Work and model directories are found by :mod:`automedsam_jax.io.rundir`.
"""

from .evaluator import CaseResult, Evaluation, evaluate_records
from .presence import PresenceCounts, calibrate, presence_scores, too_few_kinds
from .report import paper_table, write_reports

__all__ = ["CaseResult", "Evaluation", "PresenceCounts", "calibrate", "evaluate_records",
           "paper_table", "presence_scores", "too_few_kinds", "write_reports"]
