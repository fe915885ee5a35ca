"""The ablation script's seed aggregation against a hand computation."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablation  # noqa: E402


def _metrics(mean, per_class, accuracy):
    return {"per_dataset": {"demo": {"dsc": mean}}, "presence": {"accuracy": accuracy},
            "per_class": {name: {"dsc": d} for name, d in per_class.items()}}


def test_mean_std_by_hand():
    # 0.5, 0.7, 0.9: mean 0.7; squared deviations 0.04, 0, 0.04 → var 0.08 / 2 = 0.04 → std 0.2
    mean, std = ablation.mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)
    assert ablation.mean_std([0.3]) == (0.3, 0.0)
    mean, std = ablation.mean_std([None, 1.0, float("nan"), 3.0])  # never-scored seeds skipped
    assert mean == pytest.approx(2.0) and std == pytest.approx(math.sqrt(2.0))
    assert all(math.isnan(x) for x in ablation.mean_std([None]))


def test_row_figures_over_three_seeds():
    seeds = [{"metrics": {"test": _metrics(0.6, {"liver": 0.9, "pancreas": None}, 0.90),
                          "validation": _metrics(0.5, {"liver": 0.8, "pancreas": 0.1}, 0.80)},
              "steps": 400, "wall": 300.0},
             {"metrics": {"test": _metrics(0.8, {"liver": 0.7, "pancreas": 0.2}, 1.00),
                          "validation": _metrics(0.7, {"liver": 0.6, "pancreas": 0.3}, 0.90)},
              "steps": 400, "wall": 360.0},
             {"metrics": {"test": _metrics(0.7, {"liver": 0.8, "pancreas": 0.4}, 0.95),
                          "validation": _metrics(0.9, {"liver": 0.4, "pancreas": 0.5}, 1.00)},
              "steps": 400, "wall": 420.0}]
    fig = ablation.row_figures(seeds)
    assert fig["mean/test"] == pytest.approx((0.7, 0.1))
    assert fig["mean/validation"] == pytest.approx((0.7, 0.2))
    assert fig["dsc/liver"] == pytest.approx((0.8, 0.1))
    # pancreas: seed 0 never scored it → mean of 0.2 and 0.4, std √((0.01 + 0.01) / 1)
    assert fig["dsc/pancreas"] == pytest.approx((0.3, math.sqrt(0.02)))
    assert fig["presence/test"] == pytest.approx((0.95, 0.05))
    assert fig["presence/validation"] == pytest.approx((0.9, 0.1))
    assert fig["wall_min"] == pytest.approx((6.0, 1.0))
    assert fig["steps"] == (400, 0.0)
    text = ablation.table({"map": fig}, ["liver", "pancreas"], {"map": 3})
    assert "| 0.800 ± 0.100 | 0.300 ± 0.141 | 0.700 ± 0.100 | 0.700 ± 0.200 |" in text
