"""HD95 and the BraTS region metrics (automedsam_jax/core/regions.py): HD95 against DeepMind's
``surface-distance`` (the definition BraTS 2023 calls) exactly and MONAI's
``compute_hausdorff_distance(percentile=95)`` within a voxel, on anisotropic volumes; regions,
sensitivity / specificity and lesion-wise scores against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from automedsam_jax.core.metrics import case_metrics, hausdorff, volume_diagonal
from automedsam_jax.core.regions import (EMPTY_HD95, LESION_MISS_HD95, RegionMetrics,
                                         lesion_wise, region_metrics, sensitivity_specificity,
                                         summarise)
from automedsam_jax.data.presets import BRATS, BRATS_REGIONS, brats

SPACINGS = [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9), (0.8, 1.6, 1.1)]


def _blobs(seed: int, shape=(18, 40, 36)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)

    def blob():
        x = ndimage.gaussian_filter(rng.random(shape), 3)
        return x > np.quantile(x, 0.8)

    return blob(), blob()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_hd95_equals_surface_distance(sd, seed, spacing):
    gt, pred = _blobs(seed)
    want = sd.compute_robust_hausdorff(sd.compute_surface_distances(gt, pred, spacing), 95)
    assert hausdorff(gt, pred, spacing) == pytest.approx(want, abs=1e-9)
    want50 = sd.compute_robust_hausdorff(sd.compute_surface_distances(gt, pred, spacing), 50)
    assert hausdorff(gt, pred, spacing, percentile=50) == pytest.approx(want50, abs=1e-9)


def test_hd95_2d_equals_surface_distance(sd):
    gt, pred = (m[9] for m in _blobs(7))
    for spacing in ((1.0, 1.0), (0.6, 1.3)):
        want = sd.compute_robust_hausdorff(sd.compute_surface_distances(gt, pred, spacing), 95)
        assert hausdorff(gt, pred, spacing) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_hd95_within_a_voxel_of_monai(seed, spacing):
    """MONAI takes the percentile over boundary voxels (centres), surface-distance over surface
    elements between voxels weighted by area: the two differ by less than one voxel diagonal."""
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance

    gt, pred = _blobs(10 + seed)
    monai = float(compute_hausdorff_distance(torch.tensor(pred[None, None]),
                                             torch.tensor(gt[None, None]), percentile=95,
                                             spacing=spacing))
    assert abs(hausdorff(gt, pred, spacing) - monai) < np.linalg.norm(spacing)


def test_hd95_of_two_cubes_by_hand():
    """A 4×4×4 cube and the same cube shifted by 3 voxels along x at spacing (1, 1, 2): every
    surface element of either face across is 3 × 2 = 6 mm from the other's; the 95th
    percentile is 6 mm."""
    gt = np.zeros((8, 8, 16), bool)
    gt[2:6, 2:6, 2:6] = True
    pred = np.roll(gt, 3, axis=2)
    assert hausdorff(gt, pred, (1.0, 1.0, 2.0)) == pytest.approx(6.0)


def test_empty_conventions():
    empty, one = np.zeros((4, 5, 6), bool), np.zeros((4, 5, 6), bool)
    one[1:3, 1:3, 1:3] = True
    assert hausdorff(empty, empty, (1, 1, 1)) == 0.0
    assert math.isinf(hausdorff(one, empty, (1, 1, 1)))
    assert math.isinf(hausdorff(empty, one, (1, 1, 1)))
    # Per class: the volume's diagonal; for BraTS's 240 × 240 × 155 mm volume that is 373.13.
    assert volume_diagonal((155, 240, 240), (1, 1, 1)) == pytest.approx(373.13, abs=5e-3)
    got = case_metrics(one.astype(np.uint8), empty.astype(np.uint8), (2.0, 1.0, 1.0), hd95=True)
    assert got[1].hd95 == pytest.approx(math.sqrt(8 ** 2 + 5 ** 2 + 6 ** 2))
    # Per region: both empty → Dice 1, HD95 0; one empty → Dice 0, HD95 373.13 mm.
    labels = one.astype(np.uint8)
    both = region_metrics(np.zeros_like(labels), np.zeros_like(labels), (1, 1, 1),
                          (("WT", (1,)),))["WT"]
    assert (both.dsc, both.hd95, both.sensitivity, both.specificity, both.nsd) == (1, 0, 1, 1, 1)
    missed = region_metrics(labels, np.zeros_like(labels), (1, 1, 1), (("WT", (1,)),))["WT"]
    assert (missed.dsc, missed.hd95, missed.sensitivity, missed.nsd) == (0, EMPTY_HD95, 0, 0)
    assert missed.specificity == 1.0
    spurious = region_metrics(np.zeros_like(labels), labels, (1, 1, 1), (("WT", (1,)),))["WT"]
    assert (spurious.dsc, spurious.hd95, spurious.sensitivity) == (0, EMPTY_HD95, 0)
    assert spurious.specificity == pytest.approx((120 - 8) / 120)


def test_regions_are_the_unions_written_by_hand():
    """Class ids of ``brats:classes=subregions`` (1 necrotic core, 2 oedema, 3 enhancing) on a
    1 × 2 × 6 volume; the WT / TC / ET masks and their voxel counts are written out here."""
    gt = np.array([[[1, 2, 3, 0, 2, 3], [3, 0, 0, 1, 2, 0]]], np.uint8)
    pred = np.array([[[1, 1, 3, 0, 2, 0], [2, 0, 3, 1, 0, 0]]], np.uint8)
    wt_g = [[[1, 1, 1, 0, 1, 1], [1, 0, 0, 1, 1, 0]]]
    wt_p = [[[1, 1, 1, 0, 1, 0], [1, 0, 1, 1, 0, 0]]]
    tc_g = [[[1, 0, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0]]]
    tc_p = [[[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0]]]
    et_g = [[[0, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0]]]
    et_p = [[[0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0]]]
    got = region_metrics(gt, pred, (3.0, 1.0, 1.0), brats("flair", "subregions").regions)
    assert list(got) == ["WT", "TC", "ET"] and BRATS_REGIONS == (
        ("WT", (1, 2, 3)), ("TC", (1, 3)), ("ET", (3,)))
    for name, g, p in (("WT", wt_g, wt_p), ("TC", tc_g, tc_p), ("ET", et_g, et_p)):
        g, p = np.array(g, bool), np.array(p, bool)
        tp, fp, fn = (g & p).sum(), (~g & p).sum(), (g & ~p).sum()
        tn = g.size - tp - fp - fn
        assert got[name].dsc == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert got[name].sensitivity == pytest.approx(tp / (tp + fn))
        assert got[name].specificity == pytest.approx(tn / (tn + fp))
    # By hand: WT 6 of 8 GT voxels found, 1 spurious → Dice 12 / 15; TC 3 of 5, 2 spurious →
    # 6 / 10; ET 1 of 3, 1 spurious → 2 / 5.
    assert [got[n].dsc for n in ("WT", "TC", "ET")] == pytest.approx([0.8, 0.6, 0.4])
    # The one-class preset: WT is its one class.
    assert BRATS.regions == (("WT", (1,)),)


def test_sensitivity_specificity_conventions():
    z = np.zeros(10, bool)
    assert sensitivity_specificity(z, z) == (1.0, 1.0)
    p = z.copy()
    p[0] = True
    assert sensitivity_specificity(z, p) == (0.0, 0.9)
    assert sensitivity_specificity(np.ones(4, bool), np.ones(4, bool)) == (1.0, 1.0)


def _cube(volume, z, y, x, n):
    volume[z:z + n, y:y + n, x:x + n] = True


def test_lesion_wise_two_lesions_worked_by_hand():
    """Ground truth: lesions A (4³ = 64 voxels) and B (4³), far apart, and C (3³ = 27 ≤ 50
    voxels: left out). Prediction: A exactly, B missed, C hit, one spurious cube far from all.
    Lesions scored: A (Dice 1, HD95 0) and B (0, 374); false positives: the spurious cube only
    (the component on C touches a lesion, so it is not one). Lesion-wise Dice = (1 + 0) / 3,
    HD95 = (0 + 374 + 374) / 3."""
    gt = np.zeros((12, 40, 40), bool)
    _cube(gt, 2, 2, 2, 4)
    _cube(gt, 2, 30, 30, 4)
    _cube(gt, 2, 2, 30, 3)
    pred = np.zeros_like(gt)
    _cube(pred, 2, 2, 2, 4)
    _cube(pred, 2, 2, 30, 3)
    _cube(pred, 8, 30, 2, 3)
    got = lesion_wise(gt, pred, (1.0, 1.0, 1.0))
    assert (got.lesions, got.found, got.false_positives) == (2, 1, 1)
    assert got.dsc == pytest.approx(1 / 3)
    assert got.hd95 == pytest.approx(2 * LESION_MISS_HD95 / 3)
    # The same at 2 mm slices: C is 54 mm³ > 50 now, and scored (found exactly).
    got = lesion_wise(gt, pred, (2.0, 1.0, 1.0))
    assert (got.lesions, got.found, got.false_positives) == (3, 2, 1)
    assert got.dsc == pytest.approx(2 / 4) and got.hd95 == pytest.approx(2 * 374 / 4)


@pytest.mark.parametrize("gap, lesions", [(6, 1), (7, 2)])
def test_lesion_wise_merges_lesions_within_the_dilation(gap, lesions):
    """Two 4³ cubes ``gap`` empty voxels apart along x: three dilations grow each by 3 voxels,
    so they join (one lesion) up to a gap of 6 and stay apart from 7. The prediction finds the
    first cube only: one lesion of Dice 2·64 / (128 + 64) = 2/3, or two lesions of Dice 1 and 0."""
    gt = np.zeros((8, 8, 30), bool)
    _cube(gt, 2, 2, 2, 4)
    _cube(gt, 2, 2, 6 + gap, 4)
    pred = np.zeros_like(gt)
    _cube(pred, 2, 2, 2, 4)
    got = lesion_wise(gt, pred, (1.0, 1.0, 1.0))
    assert got.lesions == lesions and got.false_positives == 0
    assert got.dsc == pytest.approx(2 / 3 if lesions == 1 else 1 / 2)


def test_lesion_wise_empty_and_region_option():
    empty = np.zeros((4, 6, 6), np.uint8)
    got = lesion_wise(empty.astype(bool), empty.astype(bool), (1, 1, 1))
    assert (got.dsc, got.hd95) == (1.0, 0.0)
    labels = empty.copy()
    labels[:, 1:5, 1:5] = 1  # 64 voxels
    scores = region_metrics(labels, labels, (1, 1, 1), (("WT", (1,)),), lesions=True)["WT"]
    assert (scores.lesion_dsc, scores.lesion_hd95) == (1.0, 0.0)
    with pytest.raises(ValueError, match="3D"):
        region_metrics(labels[0], labels[0], None, (("WT", (1,)),), lesions=True)


def test_summarise_mean_median_std():
    cases = [{"WT": RegionMetrics(0.9, 2.0, 1.0, 1.0, 0.8)},
             {"WT": RegionMetrics(0.5, 10.0, 0.5, 1.0, 0.4)},
             {"WT": RegionMetrics(0.7, 3.0, 0.75, 0.5, 0.6)}]
    got = summarise(cases)["WT"]
    assert got.cases == 3
    assert got.mean["dsc"] == pytest.approx(0.7) and got.median["hd95"] == 3.0
    assert got.std["dsc"] == pytest.approx(math.sqrt((0.04 + 0.04 + 0) / 3))
    assert "lesion_dsc" not in got.mean
