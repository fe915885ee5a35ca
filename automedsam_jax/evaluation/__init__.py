"""Evaluation of AutoMedSAM and of the box-prompted MedSAM baseline (``python evaluate.py``).

segmenter.py (batched slices × prompts → label maps) · volumes.py (slices → cases) ·
evaluator.py (DSC/NSD per case, class and dataset) · report.py (JSON, CSV, paper-style Markdown)
· presence.py (is a class on a slice: calibration and counts) · models.py (work directories
and model directories) · cli.py (the command).
"""

from .evaluator import CaseResult, Evaluation, evaluate_records
from .models import TrainedModel, load_automedsam, load_sam, model_dir
from .presence import PresenceCounts, calibrate, presence_scores
from .report import paper_table, write_reports
from .segmenter import BoxSegmenter, ClassSegmenter, Segmenter, gt_box, segment_slices

__all__ = ["BoxSegmenter", "CaseResult", "ClassSegmenter", "Evaluation", "PresenceCounts",
           "Segmenter", "TrainedModel", "calibrate", "evaluate_records", "gt_box",
           "load_automedsam", "load_sam", "model_dir", "paper_table", "presence_scores",
           "segment_slices", "write_reports"]
