"""Golden tests of the metrics: every number below is computed by hand (see the comments)."""

import numpy as np
import pytest

from videoseg_r1.eval import metrics as M


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------ J


def test_j_hand_cases():
    a = box(4, 4, 0, 2, 0, 2)  # 4 pixels
    b = box(4, 4, 1, 3, 1, 3)  # 4 pixels, 1 shared -> union 7
    assert M.region_similarity(a, b) == pytest.approx(1 / 7, abs=0)
    empty = np.zeros((4, 4), bool)
    assert M.region_similarity(empty, empty) == 1.0  # empty union -> 1
    assert M.region_similarity(empty, a) == 0.0
    assert M.region_similarity(a, empty) == 0.0
    assert M.region_similarity(a, a) == 1.0
    # whole-video call: (T, H, W) -> T values; integer masks are accepted (non-zero = foreground)
    j = M.region_similarity(np.stack([a, empty, a]).astype(np.uint8) * 255, np.stack([b, empty, empty]))
    assert isinstance(j, np.ndarray) and j.shape == (3,)
    assert j.tolist() == [1 / 7, 1.0, 0.0]
    assert isinstance(M.region_similarity(a, b), float)


def test_j_void_pixels_excluded():
    a = box(4, 4, 0, 2, 0, 2)
    b = box(4, 4, 1, 3, 1, 3)
    void = np.zeros((4, 4), bool)
    void[2, 2] = True  # removes one pixel of b from the union: 1 / 6
    assert M.region_similarity(a, b, void) == 1 / 6


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        M.contour_accuracy(np.zeros((3, 4), bool), np.zeros((4, 3), bool))
    with pytest.raises(ValueError):
        M.region_similarity(np.zeros((2, 3, 4, 5), bool), np.zeros((2, 3, 4, 5), bool))


# ------------------------------------------------------------------ boundary maps


def test_seg2bmap_single_pixel_and_constant_masks():
    seg = np.zeros((3, 3), bool)
    seg[1, 1] = True
    # the pixel, its left, upper and upper-left neighbours differ from a right/lower/lower-right one
    assert M.seg2bmap(seg).astype(int).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    assert not M.seg2bmap(np.ones((5, 7), bool)).any()  # a full mask has no boundary
    assert not M.seg2bmap(np.zeros((5, 7), bool)).any()
    corner = np.zeros((3, 3), bool)
    corner[2, 2] = True  # last row / column compare with their single remaining neighbour
    assert M.seg2bmap(corner).astype(int).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0]]


def test_radius_is_ceil_of_diagonal_fraction():
    assert M.boundary_radius(30, 40) == 1  # 0.008 * 50 = 0.4 -> ceil 1 (rounding would give 0)
    assert M.boundary_radius(100, 100) == 2  # 0.008 * 141.42 = 1.13 -> 2
    assert M.boundary_radius(480, 854) == 8  # 7.83 -> 8
    assert M.boundary_radius(10, 10, bound_th=3) == 3
    assert M.disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert M.disk(2)[0].tolist() == [0, 0, 1, 0, 0] and M.disk(2)[1].tolist() == [0, 1, 1, 1, 0]


# ------------------------------------------------------------------ F


def test_f_empty_boundary_cases():
    e = np.zeros((20, 20), bool)
    sq = box(20, 20, 5, 10, 5, 10)
    full = np.ones((20, 20), bool)
    assert M.contour_accuracy(e, e) == 1.0  # no boundary on either side: P = R = 1
    assert M.contour_accuracy(e, sq) == 0.0  # empty prediction: P = 1, R = 0
    assert M.contour_accuracy(sq, e) == 0.0  # prediction on an empty frame: P = 0, R = 1
    assert M.contour_accuracy(full, e) == 1.0  # a full mask has an empty boundary too
    assert M.contour_accuracy(full, sq) == 0.0
    assert M.contour_accuracy(sq, sq) == 1.0


def test_f_vertical_bands_tolerance_one_pixel():
    # 30 x 40: radius 1. A band x in [10, 20) has boundary columns 9 and 19 (all 30 rows).
    gt = box(30, 40, 0, 30, 10, 20)
    assert M.seg2bmap(gt).sum() == 60
    assert M.contour_accuracy(box(30, 40, 0, 30, 11, 21), gt) == 1.0  # columns 10, 20: 1 px away
    assert M.contour_accuracy(box(30, 40, 0, 30, 11, 20), gt) == 1.0  # columns 10, 19
    assert M.contour_accuracy(box(30, 40, 0, 30, 12, 22), gt) == 0.0  # 2 px away: P = R = 0 -> F = 0
    # half the rows shifted by 2: P = R = 1/2
    half = box(30, 40, 0, 30, 10, 20)
    half[:15] = box(30, 40, 0, 30, 12, 22)[:15]
    # rows 0..14 (boundary at 11, 21) do not match; row 14's boundary also picks up the step to row 15
    f = M.contour_accuracy(half, gt)
    assert 0.45 < f < 0.55


def test_f_diagonal_disk():
    # 100 x 100: radius 2, so (1, 1) and (2, 0) offsets are within the disk, (2, 1) is not.
    gt = np.zeros((100, 100), bool)
    gt[50, 50] = True  # boundary {(49,49), (49,50), (50,49), (50,50)}
    p = np.zeros((100, 100), bool)
    p[52, 51] = True  # boundary {(51,50), (51,51), (52,50), (52,51)}
    # prediction side: (52,51) is (2,1) from the nearest gt pixel -> 3 of 4 matched; gt side: (49,49)
    # is (2,1) from the nearest -> 3 of 4. P = R = 3/4 -> F = 3/4.
    assert M.contour_accuracy(p, gt) == 0.75
    p = np.zeros((100, 100), bool)
    p[53, 50] = True  # shift (3, 0): rows 52 match (2 away), rows 53 do not -> P = R = 1/2
    assert M.contour_accuracy(p, gt) == 0.5


def test_f_whole_video_and_single_frame_types():
    gt = np.stack([box(30, 40, 0, 30, 10, 20)] * 3)
    pr = np.stack([box(30, 40, 0, 30, 11, 21), np.zeros((30, 40), bool), box(30, 40, 0, 30, 12, 22)])
    f = M.contour_accuracy(pr, gt)
    assert f.dtype == np.float64 and f.tolist() == [1.0, 0.0, 0.0]
    j, f2 = M.jf(pr, gt)
    assert f2.tolist() == f.tolist() and j.shape == (3,)
    assert isinstance(M.contour_accuracy(pr[0], gt[0]), float)


def test_f_wide_rows_cross_word_boundaries():
    # widths around the 64-pixel word size; a band crossing x = 64 and one touching the last column
    for w in (63, 64, 65, 130):
        gt = box(12, w, 2, 10, w // 2 - 3, w)
        pr = box(12, w, 2, 10, w // 2 - 2, w)
        assert M.contour_accuracy(pr, gt) == 1.0  # radius >= 1 for these sizes, 1 px shift matches


# ------------------------------------------------------------------ statistics


def test_decay_bins_short_and_long_videos():
    assert M.decay_bins(1) == [(0, 1)] * 4
    assert M.decay_bins(2) == [(0, 1), (0, 2), (1, 2), (1, 2)]  # ids 0,0,1,1,1
    assert M.decay_bins(5) == [(0, 2), (1, 3), (2, 4), (3, 5)]
    # 300 frames: ids 0, 75, 150, 224, 299 (the reference's uint8 cast would wrap them)
    assert M.decay_bins(300) == [(0, 76), (75, 151), (150, 225), (224, 300)]
    s = M.db_statistics([1.0])
    assert (s.mean, s.recall, s.decay) == (1.0, 1.0, 0.0)
    s = M.db_statistics([0.9, 0.3])
    assert s.mean == pytest.approx(0.6) and s.recall == 0.5 and s.decay == pytest.approx(0.6)
    s = M.db_statistics([1.0, 1.0, 0.5, 0.0, 0.0])
    assert s.recall == 0.4 and s.decay == 1.0  # 0.5 is not a recall hit (strictly greater)
    v = np.r_[np.ones(150), np.zeros(150)]
    assert M.db_statistics(v).decay == 1.0
    assert M.db_statistics([np.nan, 1.0]).mean == 1.0


# ------------------------------------------------------------------ robustness


def _r_case():
    a = np.array([[[1, 1, 0], [0, 0, 0]]], bool)
    b = np.array([[[0, 1, 1], [0, 0, 0]]], bool)  # overlaps a at (0, 1)
    pred = np.array([[[0, 1, 0], [1, 0, 0]]], bool)  # the shared pixel + one false positive
    fg = np.array([[[1, 1, 1], [0, 0, 0]]], bool)  # 3 foreground pixels
    return a, b, pred, fg


def test_robustness_parity_and_corrected():
    a, b, pred, fg = _r_case()
    # parity: uint8 count 2 at (0,1): (1 - 2) wraps to 255 -> 255 + 1 = 256 "false positives" -> 0
    assert M.robustness(pred, [a, b], fg, "parity").tolist() == [0.0]
    # corrected: one false positive out of 3 foreground pixels
    assert M.robustness(pred, [a, b], fg, "corrected").tolist() == [1 - 1 / 3]
    # one target: both modes agree (parity keeps the reference's + 1e-6)
    assert M.robustness(pred, [a], fg, "parity")[0] == 1 - 1 / (3 + 1e-6)
    assert M.robustness(pred, [a], fg, "corrected")[0] == 1 - 1 / 3
    # a 0/255 prediction read by the reference counts each false positive 255 times
    assert M.robustness(pred, [a], fg, "parity", pred_value=255)[0] == 0.0
    # no annotated foreground: 1 without false positives, 0 with
    z = np.zeros_like(fg)
    assert M.robustness(z, [z], z, "parity").tolist() == [1.0]
    assert M.robustness(pred, [z], z, "parity").tolist() == [0.0]
    assert M.robustness(pred, [z], z, "corrected").tolist() == [0.0]
    with pytest.raises(ValueError):
        M.robustness(pred, [a], fg, "bogus")


# ------------------------------------------------------------------ image metrics


def test_giou_ciou():
    p = box(4, 4, 0, 2, 0, 2)
    g = box(4, 4, 0, 2, 1, 3)
    assert M.iou_counts(p, g) == (2, 6)
    ignore = np.zeros((4, 4), bool)
    ignore[:, 2] = True
    assert M.iou_counts(p, g, ignore) == (2, 4)
    inters, unions = [2, 0, 3], [6, 0, 3]
    assert M.giou(inters, unions) == pytest.approx((2 / (6 + 1e-5) + 1.0 + 3 / (3 + 1e-5)) / 3, abs=1e-15)
    assert M.giou(inters, unions, eps=0) == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert M.ciou(inters, unions) == pytest.approx(5 / (9 + 1e-10), abs=1e-15)
