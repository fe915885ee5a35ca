"""3-D post-processing on a hand-built volume: the expected result is built by hand, and the
largest-component step agrees with scipy.ndimage's own labelling."""

import numpy as np
from scipy import ndimage

from automedsam_jax.inference.postprocess_3d import (largest_components, postprocess_case,
                                                     smooth_presence)


def _volume():
    v = np.zeros((6, 8, 8), np.uint8)
    v[1:4, 1:4, 1:4] = 1        # class 1: a 3-slice block (27 voxels) ...
    v[2, 6, 6] = 1              # ... and a stray voxel on a slice that has the block too
    v[5, 6:8, 0:2] = 1          # ... and a patch on slice 5 alone (no neighbour with class 1)
    v[0:2, 5:8, 5:8] = 2        # class 2: slices 0-1 (the first slice of the volume)
    v[4, 0, 7] = 2              # class 2 on slice 4 alone
    v[2:5, 6, 0] = 3            # class 3: a 3-voxel column through slices 2-4
    v[2:5, 0, 0] = 3            # a second column of the same size (a tie)
    return v


def test_smooth_presence_by_hand():
    v = _volume()
    out = smooth_presence(v, [1, 2, 3])
    expected = v.copy()
    expected[5][v[5] == 1] = 0  # class 1 on slice 5 but not on 4 (nor 6, outside) → dropped
    expected[4][v[4] == 2] = 0  # class 2 on slice 4 alone → dropped
    np.testing.assert_array_equal(out, expected)
    # slices 0 and 1 keep class 2: slice 0 has it on slices 0 and 1 (two of three).
    assert (out[0] == 2).sum() == 9


def test_largest_components_by_hand_and_against_scipy():
    v = _volume()
    out = largest_components(v, [1, 2, 3])
    expected = np.zeros_like(v)
    expected[1:4, 1:4, 1:4] = 1
    expected[0:2, 5:8, 5:8] = 2
    expected[2:5, 0, 0] = 3     # the tie goes to the first in scan order (z, y, x)
    np.testing.assert_array_equal(out, expected)
    for c in (1, 2):
        comps, n = ndimage.label(v == c)
        sizes = ndimage.sum(v == c, comps, range(1, n + 1))
        np.testing.assert_array_equal(out == c, comps == 1 + int(np.argmax(sizes)))


def test_postprocess_case_volume_and_image():
    v = _volume()
    expected = np.zeros_like(v)  # the stray voxel, the lone slices and the tied column go
    expected[1:4, 1:4, 1:4] = 1
    expected[0:2, 5:8, 5:8] = 2
    expected[2:5, 0, 0] = 3
    np.testing.assert_array_equal(postprocess_case(v, [1, 2, 3]), expected)
    image = np.zeros((5, 5), np.uint8)
    image[0:2, 0:2] = 1
    image[4, 4] = 1
    out = postprocess_case(image, [1])
    assert out.sum() == 4 and out[4, 4] == 0
