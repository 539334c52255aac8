"""RLE tracks (``data/rle.py``): the vectorised COCO count-string parser, counts, bounds and window
crops against pycocotools / numpy on edge cases (empty, full, single pixels in every corner, runs that
wrap from one column to the next), and malformed input raising one clear error."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from test_data_readers import make_revos
from videoseg_r1.data.base import DatasetError
from videoseg_r1.data.registry import get_reader
from videoseg_r1.data.rle import track_from_rles
from videoseg_r1.masks import MaskError, rle_encode


def _edge_masks(h, w):
    out = [np.zeros((h, w), bool), np.ones((h, w), bool)]
    for y, x in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)]:
        m = np.zeros((h, w), bool)
        m[y, x] = True
        out.append(m)
    m = np.zeros((h, w), bool)  # bottom of one column and top of the next: one run that wraps
    m[h - 2:, 0] = True
    m[:2, min(1, w - 1)] = True
    out.append(m)
    m = np.zeros((h, w), bool)
    m[:, -1] = True
    m[-1, :] = True
    out.append(m)
    return out


def _random_masks(rng, n, h, w):
    return [rng.random((h, w)) < rng.random() for _ in range(n)]


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (9, 1), (12, 16), (37, 70)])
def test_track_equals_pycocotools(h, w):
    rng = np.random.default_rng(h * 100 + w)
    masks = np.array(_edge_masks(h, w) + _random_masks(rng, 6, h, w))
    rles = [rle_encode(m) for m in masks]
    rles[0] = None  # absent-target frame, as ReVOS writes it
    tr = track_from_rles(rles, (h, w))
    ref = np.array([mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}).astype(bool)
                    if r else np.zeros((h, w), bool) for r in rles])
    assert np.array_equal(ref, masks)
    assert np.array_equal(tr.decode(), masks)
    assert np.array_equal(tr.counts(), np.count_nonzero(masks, axis=(1, 2)))


def test_bounds_and_crops_of_any_frame_range():
    rng = np.random.default_rng(1)
    h, w = 23, 31
    masks = np.array(_edge_masks(h, w)[2:] + [np.zeros((h, w), bool)] * 2 + _random_masks(rng, 3, h, w))
    tr = track_from_rles([rle_encode(m) if m.any() else None for m in masks], (h, w))
    for t0 in range(len(masks)):
        for t1 in range(t0 + 1, len(masks) + 1):
            sub = masks[t0:t1]
            b = tr.bounds(t0, t1)
            if not sub.any():
                assert b is None
                continue
            ys = np.flatnonzero(sub.any(axis=(0, 2)))
            xs = np.flatnonzero(sub.any(axis=(0, 1)))
            assert (b[2], b[3]) == (xs[0], xs[-1])
            assert b[0] <= ys[0] and b[1] >= ys[-1]  # rows widen to the full height only when a run wraps
            wraps = any(np.any(m[-1, :-1] & m[0, 1:]) for m in sub)
            if not wraps:
                assert (b[0], b[1]) == (ys[0], ys[-1])
            win = (slice(b[0], b[1] + 1), slice(b[2], b[3] + 1))
            assert np.array_equal(tr.crop(t0, t1, *win), sub[:, win[0], win[1]])
            assert np.array_equal(tr.crop(t0, t1, slice(0, h), slice(0, w)), sub)


def test_crop_needs_a_window_holding_the_foreground():
    m = np.zeros((8, 8), bool)
    m[6, 6] = True
    tr = track_from_rles([rle_encode(m)], (8, 8))
    with pytest.raises(ValueError, match="window"):
        tr.crop(0, 1, slice(0, 4), slice(0, 4))


def test_list_counts_and_bytes_counts_take_the_checked_path():
    m = np.zeros((5, 6), bool)
    m[1:4, 2:5] = True
    flat = np.concatenate([[False], m.ravel(order="F"), [True]])
    runs = np.diff(np.flatnonzero(np.diff(flat.astype(np.int8)) != 0))
    counts = [int(np.flatnonzero(m.ravel(order="F"))[0])] + [int(v) for v in runs]
    counts.append(m.size - sum(counts))
    enc = rle_encode(m)
    rles = [{"size": [5, 6], "counts": counts}, {"size": [5, 6], "counts": enc["counts"].encode()}, enc]
    tr = track_from_rles(rles, (5, 6))
    assert np.array_equal(tr.decode(), np.array([m, m, m]))


@pytest.mark.parametrize("bad", [
    {"size": [4, 4], "counts": "0\x7f"},          # outside the alphabet
    {"size": [4, 4], "counts": "0o"},             # ends inside a number ('o' = 63 has the 0x20 bit)
    {"size": [4, 4], "counts": "3"},              # runs do not cover the frame
    {"size": [5, 4], "counts": "05"},             # wrong size
    {"size": [4, 4], "counts": "é"},              # not ASCII
    "not an rle",
])
def test_malformed_rle_is_one_clear_error(bad):
    good = rle_encode(np.ones((4, 4), bool))
    with pytest.raises(MaskError, match="anno 7 frame 1: "):
        track_from_rles([good, bad], (4, 4), where="anno 7")


def test_reader_tracks_and_foreground_counts_equal_dense(tmp_path):
    root = make_revos(tmp_path / "revos")
    reader = get_reader("revos", root, "valid")
    for e in reader.expressions():
        tracks = reader.target_tracks(e)
        inst = reader.instance_masks(e)
        assert len(tracks) == len(inst)
        for tr, m in zip(tracks, inst):
            assert np.array_equal(tr.decode(), m)
        fg = reader.foreground_masks(e.video)
        assert np.array_equal(reader.foreground_counts(e.video), np.count_nonzero(fg, axis=(1, 2)))
    md = root / "mask_dict.json"
    md.write_text(md.read_text().replace('"counts": "', '"counts": "~~', 1))
    fresh = get_reader("revos", root, "valid")
    with pytest.raises(DatasetError, match="mask_dict.json"):
        for e in fresh.expressions():
            fresh.target_tracks(e)
