"""DSC / NSD (docs/method.md#metrics), checked against DeepMind's ``surface-distance`` 0.1 (a
``[test]`` dependency: missing, the oracle tests fail) on random blobs and on the demo CT's organs
(whose
download failing fails those tests unless ``AUTOMEDSAM_ALLOW_OFFLINE=1``, see conftest)."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from automedsam_jax.core import metrics as M
from automedsam_jax.core.metrics import (ClassMetrics, aggregate, case_metrics, dice, nsd,
                                         spacing_from_xyz, surface_distances)
from conftest import skip_if_offline_allowed

TAUS = (0.0, 1.0, 2.0, 3.5)


@contextlib.contextmanager
def _quiet():
    """Silences surface-distance's scipy-namespace deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def oracle_nsd(sd, gt, pred, spacing, tau):
    with np.errstate(invalid="ignore"), _quiet():
        return float(sd.compute_surface_dice_at_tolerance(
            sd.compute_surface_distances(gt.astype(bool), pred.astype(bool), spacing), tau))


def blobs(rng, shape, sigma=2.0, level=0.55):
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


@pytest.fixture(scope="module")
def demo():
    from automedsam_jax.data.demo import demo_volume
    try:
        return demo_volume()
    except RuntimeError as e:
        if "could not download" not in str(e):
            raise
        skip_if_offline_allowed(f"demo volume unavailable (no package index reachable?): {e}")


# --- agreement with surface-distance -------------------------------------------------------------

@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3), (1.0, 1.0, 1.0), (3.0, 0.8, 0.8),
                                     (0.5, 2.0, 1.25)])
def test_area_tables_match_oracle(sd, spacing):
    lt = sd.lookup_tables
    want = (lt.create_table_neighbour_code_to_contour_length(spacing) if len(spacing) == 2
            else lt.create_table_neighbour_code_to_surface_area(spacing))
    np.testing.assert_allclose(M._area_table(spacing), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spacing,shape", [((1.0, 1.0), (48, 40)), ((0.7, 1.3), (48, 40)),
                                           ((3.0, 0.8, 0.8), (12, 24, 20)),
                                           ((1.0, 1.5, 0.6), (14, 16, 22))])
def test_nsd_matches_oracle_on_random_blobs(sd, spacing, shape):
    """Three random blob pairs, each compared at every τ and as (distance, area) multisets. Every
    draw has foreground in both masks (empty masks follow conventions the oracle does not share,
    see ``test_empty_masks_vs_oracle``), so every draw is compared; and blobs touch the array
    border in some draw, so that path is covered too."""
    rng = np.random.default_rng(len(shape) * 10 + int(10 * spacing[0]))
    draws = [(blobs(rng, shape), blobs(rng, shape)) for _ in range(3)]
    border = np.ones(shape, bool)
    border[(slice(1, -1),) * len(shape)] = False
    compared, touching = 0, 0
    for gt, pred in draws:
        assert gt.any() and pred.any(), "an empty draw would be compared with nothing"
        touching += bool((gt & border).any() or (pred & border).any())
        for tau in TAUS:
            assert nsd(gt, pred, spacing, tau) == pytest.approx(
                oracle_nsd(sd, gt, pred, spacing, tau), abs=1e-6)
            compared += 1
        # the distances and areas themselves, as multisets of (distance, area) pairs
        with _quiet():
            want = sd.compute_surface_distances(gt, pred, spacing)
        got = surface_distances(gt, pred, spacing)
        for d, a, wd, wa in [(got.distances_gt_to_pred, got.areas_gt, "distances_gt_to_pred",
                              "surfel_areas_gt"),
                             (got.distances_pred_to_gt, got.areas_pred, "distances_pred_to_gt",
                              "surfel_areas_pred")]:
            assert len(d) == len(want[wd]) > 0, wd
            order = np.lexsort((a, d))
            np.testing.assert_allclose(d[order], want[wd], atol=1e-9)
            np.testing.assert_allclose(a[order], want[wa], atol=1e-9)
    assert compared == len(draws) * len(TAUS)
    assert touching >= 1, "no draw reaches the border: that path would go unchecked"


def test_nsd_matches_oracle_on_demo_organs(sd, demo):
    label = demo.label
    spacing = tuple(float(s) for s in demo.spacing)
    ball = ndimage.generate_binary_structure(3, 1)
    for c in range(1, 6):
        gt = label == c
        variants = {"eroded": ndimage.binary_erosion(gt, ball),
                    "dilated2": ndimage.binary_dilation(gt, ball, iterations=2),
                    "shifted": np.roll(gt, (1, 2, -3), axis=(0, 1, 2))}
        for name, pred in variants.items():
            for sp in (spacing, (3.0, 0.8, 0.8)):  # the real one and an anisotropic one
                for tau in (1.0, 2.0, 4.0):
                    assert nsd(gt, pred, sp, tau) == pytest.approx(
                        oracle_nsd(sd, gt, pred, sp, tau), abs=1e-6), (c, name, sp, tau)
    # a 2D slice, tau in pixels
    z = int(np.argmax((label == 1).sum(axis=(1, 2))))
    gt2 = label[z] == 1
    pred2 = ndimage.binary_erosion(gt2, iterations=2)
    for tau in TAUS:
        assert nsd(gt2, pred2, tolerance=tau) == pytest.approx(
            oracle_nsd(sd, gt2, pred2, (1.0, 1.0), tau), abs=1e-6)


def test_case_metrics_on_demo_matches_oracle(sd, demo):
    gt = demo.label
    pred = np.where(ndimage.binary_erosion(gt > 0), gt, 0).astype(np.uint8)
    pred[gt == 3] = 0  # pancreas missed entirely
    pred[0, :3, :3] = 6  # a false-positive class
    spacing = tuple(float(s) for s in demo.spacing)
    got = case_metrics(gt, pred, spacing)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for c in (1, 2, 4, 5):
        g, p = gt == c, pred == c
        with _quiet():
            want_dsc = sd.compute_dice_coefficient(g, p)
        assert got[c].dsc == pytest.approx(want_dsc, abs=1e-12)
        assert got[c].nsd == pytest.approx(oracle_nsd(sd, g, p, spacing, 2.0), abs=1e-6)
    assert got[3] == ClassMetrics(0.0, 0.0) and got[6] == ClassMetrics(0.0, 0.0)


# --- DSC ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(50,), (17, 23), (6, 9, 11), (3, 4, 5, 6)])
def test_dice_against_independent_count(shape):
    rng = np.random.default_rng(sum(shape))
    gt, pred = rng.random(shape) < 0.4, rng.random(shape) < 0.5
    g = {tuple(i) for i in np.argwhere(gt)}
    p = {tuple(i) for i in np.argwhere(pred)}
    assert dice(gt, pred) == pytest.approx(2 * len(g & p) / (len(g) + len(p)), abs=1e-12)
    assert dice(gt, gt) == 1.0
    assert dice(gt.astype(np.uint8) * 7, pred) == dice(gt, pred)  # any non-zero is foreground


# --- empty masks, challenge, spacing ------------------------------------------------------------

@pytest.mark.parametrize("shape,spacing", [((16, 16), None), ((5, 16, 16), (3.0, 0.8, 0.8))])
def test_empty_mask_conventions(shape, spacing):
    empty = np.zeros(shape, bool)
    full = np.zeros(shape, bool)
    full[(slice(1, 4),) * len(shape)] = True
    assert dice(empty, empty) == 1.0 and nsd(empty, empty, spacing) == 1.0
    for a, b in [(empty, full), (full, empty)]:
        assert dice(a, b) == 0.0 and nsd(a, b, spacing) == 0.0
        assert nsd(a, b, spacing, challenge=True) == 0.0
    sds = surface_distances(full, empty, spacing)
    assert np.isinf(sds.distances_gt_to_pred).all() and sds.areas_pred.size == 0


def test_empty_masks_vs_oracle(sd):
    """surface-distance: NaN for both empty (we say 1), 0 for one empty (as we do)."""
    empty, full = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    full[2:5, 3:6] = True
    with _quiet(), np.errstate(invalid="ignore", divide="ignore"):
        assert math.isnan(oracle_nsd(sd, empty, empty, (1.0, 1.0), 2.0))
        assert math.isnan(sd.compute_dice_coefficient(empty, empty))
        assert oracle_nsd(sd, full, empty, (1.0, 1.0), 2.0) == 0.0
        assert oracle_nsd(sd, empty, full, (1.0, 1.0), 2.0) == 0.0


def test_challenge_convention():
    gt = np.zeros((60, 60), bool)
    gt[10:50, 10:50] = True
    ring = gt & ~ndimage.binary_erosion(gt)  # the boundary only: low DSC, high NSD
    assert dice(gt, ring) <= 0.2
    assert nsd(gt, ring) > 0.9
    assert nsd(gt, ring, challenge=True) == 0.0
    good = ndimage.binary_erosion(gt, iterations=2)
    assert dice(gt, good) > 0.2
    assert nsd(gt, good, challenge=True) == nsd(gt, good)
    # exactly at the threshold (DSC = 2·1/(5+5) = 0.2) NSD is zeroed
    a, b = np.zeros((3, 9), bool), np.zeros((3, 9), bool)
    a[1, 0:5], b[1, 4:9] = True, True
    assert dice(a, b) == 0.2 and nsd(a, b) > 0 and nsd(a, b, challenge=True) == 0.0
    assert case_metrics(gt.astype(np.uint8), ring.astype(np.uint8), challenge=True)[1].nsd == 0.0


def test_axis_order_and_spacing():
    rng = np.random.default_rng(7)
    gt = blobs(rng, (10, 18, 14), level=0.5)
    pred = np.roll(ndimage.binary_dilation(gt), (1, -1, 2), axis=(0, 1, 2))
    spacing = (3.0, 0.8, 1.1)
    ref = nsd(gt, pred, spacing, 1.0)
    assert 0.1 < ref < 0.9
    for axes in itertools.permutations(range(3)):
        permuted = tuple(spacing[i] for i in axes)
        assert nsd(gt.transpose(axes), pred.transpose(axes), permuted,
                   1.0) == pytest.approx(ref, abs=1e-12)
    assert abs(nsd(gt, pred, spacing[::-1], 1.0) - ref) > 1e-3  # the order does matter
    assert spacing_from_xyz((1.1, 0.8, 3.0)) == spacing
    with pytest.raises(ValueError, match="spacing"):
        nsd(gt, pred)  # 3D needs its spacing
    with pytest.raises(ValueError):
        nsd(gt, pred, (1.0, 1.0))
    with pytest.raises(ValueError):
        nsd(gt[None], pred[None], (1.0,) * 4)


def test_cropping_is_translation_invariant():
    """A small organ in a big volume gives the same numbers as the organ alone (incl. at the
    volume border, where the zero margin is what the crop adds)."""
    rng = np.random.default_rng(3)
    gt, pred = blobs(rng, (8, 20, 20)), blobs(rng, (8, 20, 20))
    spacing = (2.5, 0.7, 0.7)
    big_gt, big_pred = (np.zeros((40, 256, 256), bool) for _ in range(2))
    big_gt[20:28, 100:120, 200:220], big_pred[20:28, 100:120, 200:220] = gt, pred
    assert nsd(big_gt, big_pred, spacing) == pytest.approx(nsd(gt, pred, spacing), abs=1e-12)
    labels = case_metrics(big_gt.astype(np.uint8), big_pred.astype(np.uint8) * 1, spacing)
    assert labels[1].nsd == pytest.approx(nsd(gt, pred, spacing), abs=1e-12)
    assert labels[1].dsc == pytest.approx(dice(gt, pred), abs=1e-12)


# --- aggregation ---------------------------------------------------------------------------------

def test_case_metrics_absent_classes():
    gt = np.zeros((12, 12), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:6, 2:6] = 1
    pred[2:6, 2:6] = 1
    pred[8:10, 8:10] = 3  # false positive of class 3; class 2 absent from both
    got = case_metrics(gt, pred, classes=[1, 2, 3])
    assert got == {1: ClassMetrics(1.0, 1.0), 3: ClassMetrics(0.0, 0.0)}
    assert case_metrics(gt, pred, classes=[1, 2, 3], skip_absent=False)[2] == ClassMetrics(1.0, 1.0)
    assert sorted(case_metrics(gt, pred)) == [1, 3]


def test_aggregate_and_json():
    cases = [{1: ClassMetrics(0.9, 0.8), 2: ClassMetrics(0.5, 0.4)},
             {1: ClassMetrics(0.7, 0.6)},
             {}]
    agg = aggregate(cases)
    assert agg.per_class[1].dsc == pytest.approx(0.8) and agg.per_class[1].cases == 2
    assert agg.per_class[2].nsd == pytest.approx(0.4) and agg.per_class[2].cases == 1
    assert agg.dsc == pytest.approx((0.8 + 0.5) / 2) and agg.nsd == pytest.approx((0.7 + 0.4) / 2)
    dumped = json.loads(json.dumps(agg.to_dict()))
    assert dumped["per_class"]["1"]["cases"] == 2
    assert math.isnan(aggregate([]).dsc)
