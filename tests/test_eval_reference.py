"""Our vectorised metrics against the per-frame reference in the official style (benchmarks/bench_eval.py),
on random masks of many shapes: equal to 1e-9 (in practice bit-identical)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from videoseg_r1.eval import metrics as M

_spec = importlib.util.spec_from_file_location("bench_eval", Path(__file__).parents[1] / "benchmarks" / "bench_eval.py")
REF = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REF)


def _random_masks(rng, t, h, w):
    kind = rng.integers(0, 3)
    if kind == 0:  # salt and pepper of random density
        return rng.random((t, h, w)) < rng.random() ** 2
    if kind == 1:  # boxes
        m = np.zeros((t, h, w), bool)
        for i in range(t):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[i, y0:y0 + rng.integers(0, h + 1), x0:x0 + rng.integers(0, w + 1)] = True
        return m
    return np.zeros((t, h, w), bool) if rng.random() < 0.5 else np.ones((t, h, w), bool)


@pytest.mark.parametrize("seed", range(4))
def test_j_f_equal_reference(seed):
    rng = np.random.default_rng(seed)
    for it in range(40):
        t, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 50)), int(rng.integers(1, 150))
        p, g = _random_masks(rng, t, h, w), _random_masks(rng, t, h, w)
        if it % 4 == 0:
            p = g.copy()
            p[:, : h // 3] = ~p[:, : h // 3]
        bt = [0.008, 0.03, 0.1, 2, 70][it % 5]
        void = rng.random((t, h, w)) < 0.05 if it % 3 == 0 else None
        j, f = M.jf(p, g, void, bound_th=bt)
        rj = REF.ref_db_eval_iou(g.astype(np.uint8), p.astype(np.uint8), void)
        rf = REF.ref_db_eval_boundary(g.astype(np.uint8), p.astype(np.uint8), void, bound_th=bt)
        np.testing.assert_allclose(j, rj, rtol=0, atol=1e-9)
        np.testing.assert_allclose(f, rf, rtol=0, atol=1e-9)


def test_video_sized_masks_equal_reference():
    rng = np.random.default_rng(7)
    gts, preds = REF.random_video_masks(rng, 6, 120, 214, n_objects=2)
    for g, p in zip(gts, preds):
        j, f = M.jf(p, g)
        np.testing.assert_allclose(j, REF.ref_db_eval_iou(g, p), rtol=0, atol=1e-9)
        np.testing.assert_allclose(f, REF.ref_db_eval_boundary(g.astype(np.uint8), p.astype(np.uint8)), rtol=0, atol=1e-9)


def test_statistics_equal_reference():
    rng = np.random.default_rng(3)
    for n in list(range(1, 12)) + [37, 100, 255]:
        v = rng.random(n)
        ours = M.db_statistics(v)
        m, o, d = REF.ref_db_statistics(v)
        assert (ours.mean, ours.recall) == (m, o)
        assert abs(ours.decay - d) <= 1e-12


@pytest.mark.parametrize("pred_value", [1, 255])
def test_robustness_parity_equals_reference(pred_value):
    rng = np.random.default_rng(11)
    for _ in range(20):
        t, h, w = 3, int(rng.integers(2, 20)), int(rng.integers(2, 20))
        k = int(rng.integers(1, 4))
        inst = [rng.random((t, h, w)) < 0.4 for _ in range(k)]
        pred = rng.random((t, h, w)) < 0.5
        fg = np.zeros((t, h, w), bool)
        for m in inst:
            fg |= m
        fg |= rng.random((t, h, w)) < 0.2
        gt_u8 = np.zeros((t, h, w), np.uint8)
        for m in inst:
            gt_u8 += m.astype(np.uint8)
        ref = REF.ref_robustness(gt_u8, pred.astype(np.uint8) * pred_value, fg.astype(np.uint8))
        ours = M.robustness(pred, inst, fg, "parity", pred_value=pred_value)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
