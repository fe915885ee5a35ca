"""The shifted evaluation's transforms (data/shifts.py), each against an independent computation on
hand-built slices whose structures are known in millimetres."""

import numpy as np
import pytest
from scipy import ndimage

from automedsam_jax.data import shifts
from automedsam_jax.data.shifts import ShiftParams

SRC_MM = (1.5, 1.5)


def _disk(shape, centre_px, radius_px):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre_px[0]) ** 2 + (xx - centre_px[1]) ** 2 <= radius_px ** 2


def _phantom(shape=(160, 140)):
    """A water body (0 HU) in air with a 'liver' disk (id 5, 60 HU) off centre."""
    seg = np.zeros(shape, np.uint8)
    body = _disk(shape, (80, 70), 65)
    liver = _disk(shape, (60, 50), 20)  # 30 mm radius
    seg[liver] = 5
    hu = np.where(body, 0.0, -1000.0).astype(np.float32)
    hu[liver] = 60.0
    return hu, seg


def test_spacing_resamples_like_scipy_on_the_physical_grid():
    """Output pixel i lies at (i − c_out)·s_out mm from the grid centre; the source value there,
    interpolated by map_coordinates on coordinates built here, equals the rendering."""
    hu, seg = _phantom()
    p = ShiftParams(spacing=0.8)
    out, out_seg = shifts.render_slice(hu, seg, SRC_MM, p, np.random.default_rng(0))
    assert out.shape == out_seg.shape == (shifts.MATRIX, shifts.MATRIX)
    c_out = (shifts.MATRIX - 1) / 2
    c_src = (np.array(hu.shape) - 1) / 2
    i = np.arange(shifts.MATRIX)
    ys = (i - c_out) * 0.8 / SRC_MM[0] + c_src[0]
    xs = (i - c_out) * 0.8 / SRC_MM[1] + c_src[1]
    coords = np.stack(np.meshgrid(ys, xs, indexing="ij"))
    want = ndimage.map_coordinates(hu, coords, order=3, mode="constant", cval=-1000.0)
    np.testing.assert_allclose(out, want, atol=1e-3)
    want_seg = ndimage.map_coordinates(seg, coords, order=0, mode="constant", cval=0)
    assert (out_seg == want_seg).mean() > 0.9999


@pytest.mark.parametrize("spacing", [0.7, 0.85, 1.0])
def test_spacing_preserves_each_label_area_in_mm2(spacing):
    """The liver disk is π·30² mm² = 2827 mm²; nearest resampling keeps it within 2 %."""
    hu, seg = _phantom()
    src_area = (seg == 5).sum() * SRC_MM[0] * SRC_MM[1]
    _, out_seg = shifts.render_slice(hu, seg, SRC_MM, ShiftParams(spacing=spacing),
                                     np.random.default_rng(0))
    out_area = (out_seg == 5).sum() * spacing ** 2
    assert abs(out_area - src_area) / src_area < 0.02
    assert abs(out_area - np.pi * 30 ** 2) / (np.pi * 30 ** 2) < 0.03


def test_pose_moves_the_organ_where_the_rotation_and_shift_say():
    """The organ's centroid, in mm from the grid centre, lands at R⁻¹(source + shift) (the
    convention of shifts.geometry): computed here from the source centroid."""
    hu, seg = _phantom()
    p = ShiftParams(rotation_deg=8.0, shift_mm=(6.0, -9.0))
    _, out_seg = shifts.render_slice(hu, seg, SRC_MM, p, np.random.default_rng(0))
    centre = (np.array(seg.shape) - 1) / 2
    src_mm = (np.argwhere(seg == 5).mean(0) - centre) * SRC_MM
    t = np.deg2rad(8.0)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    want_mm = np.linalg.solve(rot, src_mm + np.array([6.0, -9.0]))
    got_mm = (np.argwhere(out_seg == 5).mean(0) - centre) * SRC_MM
    np.testing.assert_allclose(got_mm, want_mm, atol=0.5 * SRC_MM[0])
    # a rotation and shift move the organ, they do not grow it
    assert abs((out_seg == 5).sum() - (seg == 5).sum()) <= 0.02 * (seg == 5).sum()


def test_enhancement_is_added_only_under_its_label_with_a_smooth_edge():
    hu, seg = _phantom()
    offsets = (((5,), 50.0), ((1,), 70.0))  # the spleen (id 1) is absent: nothing happens
    out = shifts.enhance(hu, seg, SRC_MM, offsets)
    liver = seg == 5
    np.testing.assert_array_equal(out[~liver], hu[~liver])
    # the full offset from EDGE_MM inside the edge (distance computed here by brute force)
    inside = np.argwhere(liver)
    outside = np.argwhere(~liver)
    sample = inside[:: max(1, len(inside) // 200)]
    d = np.array([np.sqrt((((outside - q) * SRC_MM) ** 2).sum(1)).min() for q in sample])
    delta = out[tuple(sample.T)] - hu[tuple(sample.T)]
    deep = d - 0.5 * SRC_MM[0] >= shifts.EDGE_MM
    np.testing.assert_allclose(delta[deep], 50.0, atol=1e-4)
    np.testing.assert_allclose(delta, 50.0 * np.clip((d - 0.75) / shifts.EDGE_MM, 0, 1),
                               atol=1e-3)
    assert (delta[~deep] < 50.0).all() and (delta >= 0).all()


def test_smoothing_kernel_has_the_drawn_width_in_mm():
    """An impulse's response has standard deviation smooth_mm (in mm, at the output spacing)."""
    hu = np.zeros((81, 81), np.float32)
    hu[40, 40] = 1000.0
    seg = np.zeros_like(hu, np.uint8)
    p = ShiftParams(smooth_mm=1.0)
    out, _ = shifts.render_slice(hu, seg, (0.5, 0.5), p, np.random.default_rng(0))
    r = out.sum(0) / out.sum()
    x_mm = (np.arange(81) - 40) * 0.5
    assert abs(np.sqrt((r * x_mm ** 2).sum()) - 1.0) < 0.02


def test_sharpening_overshoots_an_edge_and_keeps_flat_regions():
    hu = np.zeros((64, 64), np.float32)
    hu[:, 32:] = 100.0
    out, _ = shifts.render_slice(hu, np.zeros_like(hu, np.uint8), (1.0, 1.0),
                                 ShiftParams(sharpen=1.0), np.random.default_rng(0))
    assert out[:, 32].max() > 110.0 and out[:, 31].min() < -10.0  # unsharp-mask overshoot
    np.testing.assert_allclose(out[:, :2], 0.0, atol=0.5)  # far from the edge: unchanged


def test_noise_has_the_drawn_standard_deviation():
    hu = np.zeros((256, 256), np.float32)
    out, _ = shifts.render_slice(hu, np.zeros_like(hu, np.uint8), (1.0, 1.0),
                                 ShiftParams(noise_hu=20.0), np.random.default_rng(3))
    assert abs(out.std() - 20.0) < 0.5
    assert abs(out.mean()) < 1.0


def test_window_maps_the_shifted_level_to_the_standard_one():
    hu = np.array([[40.0 + 10.0, 40.0 + 10.0 + 220.0]], np.float32)
    out, _ = shifts.render_slice(hu, np.zeros_like(hu, np.uint8), (1.0, 1.0),
                                 ShiftParams(window=(10.0, 1.1)), np.random.default_rng(0))
    np.testing.assert_allclose(out, [[40.0, 40.0 + 200.0]], atol=1e-4)


def test_draws_are_seeded_per_case_and_do_not_depend_on_other_kinds():
    a = shifts.draw(("spacing",), shifts.case_rng(0, "val_0", "spacing"))
    b = shifts.draw(("spacing",), shifts.case_rng(0, "val_0", "spacing"))
    assert a == b
    every = shifts.draw(shifts.KINDS, shifts.case_rng(0, "val_0", "spacing"))
    assert every.spacing == a.spacing and every.offsets and every.rotation_deg
    assert shifts.draw(("spacing",), shifts.case_rng(1, "val_0", "spacing")) != a
    for p in (shifts.draw(shifts.KINDS, shifts.case_rng(s, "c", "all")) for s in range(20)):
        assert shifts.SPACING_MM[0] <= p.spacing <= shifts.SPACING_MM[1]
        assert abs(p.rotation_deg) <= shifts.ROTATION_DEG
        assert (p.smooth_mm > 0) != (p.sharpen > 0)
        assert shifts.NOISE_HU[0] <= p.noise_hu <= shifts.NOISE_HU[1]


def test_render_volume_reports_the_new_spacing():
    hu, seg = _phantom()
    vol, vseg = np.stack([hu, hu]), np.stack([seg, seg])
    out, out_seg, sp = shifts.render_volume(vol, vseg, np.array([3.0, *SRC_MM]), ("spacing",),
                                            shifts.case_rng(0, "x", "spacing"))
    assert out.shape == out_seg.shape == (2, shifts.MATRIX, shifts.MATRIX)
    assert sp[0] == 3.0 and shifts.SPACING_MM[0] <= sp[1] == sp[2] <= shifts.SPACING_MM[1]


@pytest.mark.parametrize("text", ["", "blur", "all+all", "none+nope"])
def test_unknown_shift_names_are_refused(text):
    with pytest.raises(ValueError, match="distinct shifts"):
        shifts.parse_shifts(text)
    assert shifts.parse_shifts("none+all") == ("none", "all")
