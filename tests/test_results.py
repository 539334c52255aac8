"""MaskTracks: compact storage, lazy decoding and the atomic writers."""

import json

import numpy as np
import pytest

from videoseg_r1.masks import read_binary_png, read_palette_png, rle_decode
from videoseg_r1.results import MaskTracks


def _tracks():
    tr = MaskTracks(4, 10, 12, [1, 2])
    a = np.zeros((10, 12), bool)
    a[1:5, 2:6] = True
    b = np.zeros((10, 12), bool)
    b[4:9, 5:11] = True
    tr.set(0, {1: a, 2: b})
    tr.set(2, {1: a})
    return tr, a, b


def test_store_and_read_back():
    tr, a, b = _tracks()
    assert tr.shape == (4, 10, 12)
    assert (tr.frame(0)[1] == a).all() and (tr.frame(0)[2] == b).all()
    assert not tr.frame(1)[1].any()
    assert (tr.object(1)[[0, 2]] == a).all() and not tr.object(2)[1:].any()
    assert (tr.union()[0] == (a | b)).all()
    assert tr.area(1).tolist() == [16, 0, 16, 0]
    with pytest.raises(ValueError, match="shape"):
        tr.set(1, {1: np.zeros((3, 3), bool)})


def test_writers(tmp_path):
    tr, a, b = _tracks()
    names = ["00000", "00005", "00010", "00015"]
    tr.write_palette_pngs(tmp_path / "pal", names)
    ids = read_palette_png(tmp_path / "pal" / "00000.png")
    assert (ids == 1).sum() == (a & ~b).sum() and (ids == 2).sum() == b.sum()
    tr.write_binary_pngs(tmp_path / "bin", names)
    assert (read_binary_png(tmp_path / "bin" / "00000.png") == (a | b)).all()
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == [f"{n}.png" for n in names]
    tr.write_rle_json(tmp_path / "m.json", names)
    data = json.loads((tmp_path / "m.json").read_text())
    assert (rle_decode(data["objects"]["1"]["00010"]) == a).all()
    assert not list(tmp_path.glob(".*"))  # no temp leftovers


def test_interrupted_folder_write_leaves_nothing(tmp_path):
    tr, _, _ = _tracks()
    with pytest.raises(IndexError):
        tr.write_binary_pngs(tmp_path / "bin", ["only_one_name"])
    assert not (tmp_path / "bin").exists() and not list(tmp_path.iterdir())
