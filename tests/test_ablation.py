"""The ablation script's seed aggregation against a hand computation."""

import math

import pytest

from conftest import load_benchmark

ablation = load_benchmark("ablation")


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
    def seed(test, val, shifted, steps, wall):
        return {"metrics": {"test/plain": _metrics(*test), "validation/plain": _metrics(*val),
                            "test/shifted": _metrics(*shifted)}, "steps": steps, "wall": wall}

    seeds = [seed((0.6, {"liver": 0.9, "pancreas": None}, 0.90),
                  (0.5, {"liver": 0.8, "pancreas": 0.1}, 0.80),
                  (0.2, {"liver": 0.3, "pancreas": None}, 0.70), 400, 300.0),
             seed((0.8, {"liver": 0.7, "pancreas": 0.2}, 1.00),
                  (0.7, {"liver": 0.6, "pancreas": 0.3}, 0.90),
                  (0.4, {"liver": 0.5, "pancreas": 0.0}, 0.80), 400, 360.0),
             seed((0.7, {"liver": 0.8, "pancreas": 0.4}, 0.95),
                  (0.9, {"liver": 0.4, "pancreas": 0.5}, 1.00),
                  (0.6, {"liver": 0.7, "pancreas": 0.0}, 0.90), 400, 420.0)]
    fig = ablation.row_figures(seeds)
    assert fig["mean/test/plain"] == pytest.approx((0.7, 0.1))
    assert fig["mean/validation/plain"] == pytest.approx((0.7, 0.2))
    assert fig["mean/test/shifted"] == pytest.approx((0.4, 0.2))
    assert fig["dsc/test/plain/liver"] == pytest.approx((0.8, 0.1))
    assert fig["dsc/test/shifted/liver"] == pytest.approx((0.5, 0.2))
    # pancreas: seed 0 never scored it → mean of 0.2 and 0.4, std √((0.01 + 0.01) / 1)
    assert fig["dsc/test/plain/pancreas"] == pytest.approx((0.3, math.sqrt(0.02)))
    assert fig["presence/test/plain"] == pytest.approx((0.95, 0.05))
    assert fig["presence/validation/plain"] == pytest.approx((0.9, 0.1))
    assert fig["wall_min"] == pytest.approx((6.0, 1.0))
    assert fig["steps"] == (400, 0.0)
    text = ablation.table({"map": fig}, ["liver", "pancreas"], {"map": 3})
    # DSC test plain, test shifted, validation plain, validation shifted (never run: –)
    assert "| 3 | 0.700 ± 0.100 | 0.400 ± 0.200 | 0.700 ± 0.200 | – |" in text
    assert "| 0.800 ± 0.100 | 0.500 ± 0.200 | 0.300 ± 0.141 | 0.000 ± 0.000 |" in text
