"""Window-by-window scoring (``eval/windows.py``): J, F, counts and the parity false positives from RLE
tracks and PNG frames equal the per-frame reference (benchmarks/bench_eval.py) on the full masks, on
edge cases: empty frames, full frames, single pixels in the corners, masks touching the border,
overlapping and repeated targets, video lengths that are not a multiple of the block."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from videoseg_r1.data.rle import track_from_rles
from videoseg_r1.eval import windows
from videoseg_r1.eval.protocols import PredictionError, PredictionStore
from videoseg_r1.masks import rle_encode

_spec = importlib.util.spec_from_file_location("bench_eval", Path(__file__).parents[1] / "benchmarks" / "bench_eval.py")
REF = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REF)


def _video(rng, t, h, w):
    """(T, H, W) bool: a mix of empty, full, corner pixels, border-touching boxes and random blobs."""
    out = np.zeros((t, h, w), bool)
    for i in range(t):
        kind = rng.integers(0, 6)
        if kind == 1:
            out[i] = True
        elif kind == 2:
            y, x = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)][rng.integers(0, 4)]
            out[i, y, x] = True
        elif kind == 3:  # a box touching at least one border
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            out[i, y0:, x0:] = True if rng.random() < 0.5 else False
            out[i, :y0 + 1, :x0 + 1] |= rng.random() < 0.5
        elif kind == 4:
            out[i] = rng.random((h, w)) < rng.random()
        elif kind == 5:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            out[i, y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = True
    return out


def _track(masks):
    return track_from_rles([rle_encode(m) if m.any() else None for m in masks], masks.shape[1:])


def _reference(pred, instances):
    """Per frame J, F, R numerators as the reference computes them (uint8 sums of the targets)."""
    gt = np.zeros(pred.shape, np.uint8)
    for m in instances:
        gt += m.astype(np.uint8)
    p = pred.astype(np.uint8)
    j = REF.ref_db_eval_iou(gt, p)
    f = REF.ref_db_eval_boundary(gt, p)
    neg = np.array([((1 - g) * q).sum() for g, q in zip(gt, p)], dtype=np.int64)
    return j, f, neg


@pytest.mark.parametrize("seed", range(6))
def test_blocks_from_rle_equal_reference(seed):
    rng = np.random.default_rng(seed)
    t = int(rng.integers(1, 20))
    h, w = [(1, 1), (2, 3), (9, 70), (23, 31), (40, 130), (17, 64)][seed]
    pred = _video(rng, t, h, w)
    n_targets = [0, 1, 2, 3][seed % 4]
    inst = [_video(rng, t, h, w) for _ in range(n_targets)]
    if n_targets == 3:
        inst[2] = inst[0]  # a repeated annotation: the reference counts it twice
    s = windows.score_blocks(_track(pred), [_track(m) for m in inst], t, (h, w), parity_neg=True)
    j, f, neg = _reference(pred, inst)
    np.testing.assert_allclose(s.j, j, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.f, f, rtol=0, atol=1e-12)
    assert np.array_equal(s.parity_neg, neg)
    union = np.logical_or.reduce(inst) if inst else np.zeros_like(pred)
    assert np.array_equal(s.counts.pred, pred.sum(axis=(1, 2)))
    assert np.array_equal(s.counts.gt, union.sum(axis=(1, 2)))
    assert np.array_equal(s.counts.inter, (pred & union).sum(axis=(1, 2)))


@pytest.mark.parametrize("value", [1, 255])
def test_png_frames_equal_reference(tmp_path, value):
    rng = np.random.default_rng(value)
    t, h, w = 13, 21, 75
    pred, gt = _video(rng, t, h, w), _video(rng, t, h, w)
    paths = []
    for i, m in enumerate(pred):
        img = m.astype(np.uint8) * value
        if i == 3:  # a colour PNG: any non-zero channel is foreground
            img = np.stack([np.zeros_like(img), img, np.zeros_like(img)], axis=-1)
        paths.append(tmp_path / f"{i:05d}.png")
        cv2.imwrite(str(paths[-1]), img)
    src = windows.PngFrames(paths, lambda p: PredictionStore._read_png(p, (h, w)))
    try:
        s = windows.score_blocks(src, [_track(gt)], t, (h, w), parity_neg=True)
    finally:
        src.close()
    j, f, neg = _reference(pred, [gt])
    np.testing.assert_allclose(s.j, j, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.f, f, rtol=0, atol=1e-12)
    assert np.array_equal(s.parity_neg, neg)


def test_png_errors_surface_in_frame_order(tmp_path):
    paths = []
    for i in range(20):
        paths.append(tmp_path / f"{i:05d}.png")
        cv2.imwrite(str(paths[-1]), np.zeros((4, 5), np.uint8))
    paths[12].write_bytes(b"\x89PNG broken")
    cv2.imwrite(str(paths[15]), np.zeros((3, 5), np.uint8))
    src = windows.PngFrames(paths, lambda p: PredictionStore._read_png(p, (4, 5)))
    with pytest.raises(PredictionError, match="00012.png"):
        windows.score_blocks(src, [], 20, (4, 5))
    src.close()


def test_lookahead_continues_into_the_successor(tmp_path):
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"{i:05d}.png")
        cv2.imwrite(str(paths[-1]), np.full((4, 5), i % 2, np.uint8))
    read = lambda p: PredictionStore._read_png(p, (4, 5))  # noqa: E731
    first, second = windows.PngFrames(paths[:5], read), windows.PngFrames(paths[5:], read)
    first.successor = second
    assert first.bounds(0, 5) == (0, 3, 0, 4)  # all of the first queued: the rest of the look-ahead goes on
    assert second._next == 7
    s = windows.score_blocks(second, [], 7, (4, 5))  # the frames decoded early are the right ones
    np.testing.assert_array_equal(s.counts.pred, [20 * (i % 2) for i in range(5, 12)])
    first.close()
    second.close()
