"""Objects of neighbouring slices linked by overlap into one id (issue 27: `infosam segment STACK`)."""

from __future__ import annotations

import numpy as np
import pytest

from infosam_core.inference.stack_segmentation import link_slices


def test_link_slices_keeps_one_id_per_object_and_starts_new_ones():
    a = np.zeros((3, 20, 20), np.int32)
    a[0, 2:8, 2:8] = 1  # object A, local id 1
    a[0, 12:18, 12:18] = 2  # object B, local id 2
    a[1, 3:9, 2:8] = 2  # A moved a little, local id now 2
    a[1, 12:18, 12:18] = 1  # B, local id now 1
    a[2, 3:9, 3:9] = 5  # A again
    a[2, 0:2, 15:20] = 1  # a new object, not overlapping anything
    volume = link_slices(a)
    ids_a = {int(volume[z][a[z] == k][0]) for z, k in ((0, 1), (1, 2), (2, 5))}
    ids_b = {int(volume[z][a[z] == k][0]) for z, k in ((0, 2), (1, 1))}
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    new = int(volume[2, 0, 16])
    assert new not in ids_a | ids_b and new == 3
    assert volume.dtype == np.uint32 and volume.shape == a.shape


def test_a_weak_overlap_is_not_a_link_and_each_id_is_taken_once():
    a = np.zeros((2, 20, 20), np.int32)
    a[0, 0:10, 0:10] = 1
    a[1, 8:18, 8:18] = 1  # IoU 4 / 196: a different object
    assert len(np.unique(link_slices(a)[link_slices(a) > 0])) == 2
    b = np.zeros((2, 20, 20), np.int32)
    b[0, 0:10, 0:20] = 1
    b[1, 0:10, 0:10] = 1  # the object split in two: the larger overlap keeps the id, the other is new
    b[1, 0:10, 10:20] = 2
    v = link_slices(b)
    assert len({int(v[1, 5, 5]), int(v[1, 5, 15]), int(v[0, 5, 5])}) == 2
    with pytest.raises(ValueError, match="link_iou"):
        link_slices(b, 0.0)
