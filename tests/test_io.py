"""Video and mask I/O: round trips, random access, overlays and every bad input of issue 2."""

import json

import numpy as np
import pytest

from videoseg_r1 import masks as M
from videoseg_r1.video import (ArrayVideo, VideoError, VideoWriter, draw_overlay, natural_key, open_video,
                               write_overlay_image, write_overlay_video)


def _frames(n=20, h=48, w=64):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        f = (rng.random((h, w, 3)) * 40).astype(np.uint8)
        f[:, :, 1] = min(255, 10 * i)  # green level encodes the index
        out.append(f)
    return out


def _green(frame):
    return int(round(float(frame[8:-8, 8:-8, 1].mean()) / 10))


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    with VideoWriter(path, fps=12, crf=10) as w:
        for f in _frames(25):
            w.write(f)
    return path


# ------------------------------------------------------------------ masks


def test_rle_round_trip_and_json():
    rng = np.random.default_rng(1)
    m = rng.random((37, 53)) > 0.6
    rle = M.rle_encode(m)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    again = M.rle_decode(json.loads(json.dumps(rle)))
    assert again.dtype == bool and (again == m).all()
    assert not M.rle_decode(None, shape=(4, 5)).any()


def test_rle_uncompressed_counts():
    # 3x2 mask, column-major runs: 1 zero, 3 ones, 2 zeros
    m = M.rle_decode({"size": [3, 2], "counts": [1, 3, 2]})
    assert m.tolist() == [[False, True], [True, False], [True, False]]


def test_rle_bad_input():
    with pytest.raises(M.MaskError, match="malformed"):
        M.rle_decode({"size": [3, 3], "counts": 12}, where="mask_dict.json[7]")
    with pytest.raises(M.MaskError, match="does not match"):
        M.rle_decode(M.rle_encode(np.ones((3, 3), bool)), shape=(4, 4))
    with pytest.raises(M.MaskError):
        M.rle_decode(None)


def test_palette_png_round_trip(tmp_path):
    ids = np.zeros((30, 40), np.uint8)
    ids[2:10, 3:20] = 1
    ids[15:25, 10:39] = 7
    p = tmp_path / "a" / "00000.png"
    M.write_palette_png(p, ids)
    back = M.read_palette_png(p)
    assert back.dtype == np.uint8 and (back == ids).all()
    from PIL import Image
    assert Image.open(p).mode == "P"
    per_obj = M.ids_to_masks(back)
    assert sorted(per_obj) == [1, 7]
    assert (M.masks_to_ids(per_obj) == ids).all()


def test_binary_png_round_trip_and_union(tmp_path):
    a = np.zeros((10, 12), bool)
    a[1:4, 1:5] = True
    b = np.zeros((10, 12), bool)
    b[3:8, 4:9] = True
    M.write_binary_png(tmp_path / "a.png", a)
    assert (M.read_binary_png(tmp_path / "a.png") == a).all()
    u = M.union([a, b])
    assert u.sum() == a.sum() + b.sum() - (a & b).sum()
    assert not M.union([], shape=(2, 2)).any()
    with pytest.raises(M.MaskError):
        M.union([a, np.zeros((3, 3), bool)])
    assert M.mask_box_xyxy(a) == (1, 1, 4, 3) and M.mask_box_xyxy(np.zeros((2, 2))) is None


def test_mask_bad_files(tmp_path):
    with pytest.raises(M.MaskError, match="not found"):
        M.read_binary_png(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(M.MaskError, match="bad.png"):
        M.read_palette_png(bad)
    M.write_binary_png(tmp_path / "ok.png", np.ones((5, 5), bool))
    with pytest.raises(M.MaskError, match="expected"):
        M.read_binary_png(tmp_path / "ok.png", shape=(6, 5))


# ------------------------------------------------------------------ video


def test_file_video_length_fps_random_access(mp4):
    v = open_video(mp4)
    assert len(v) == 25 and abs(v.fps - 12) < 1e-6 and (v.height, v.width) == (48, 64)
    frames = v.get_frames([20, 3, 3, 11, 0])
    assert [_green(f) for f in frames] == [20, 3, 3, 11, 0]
    assert _green(v[-1]) == 24
    assert [_green(f) for f in v] == list(range(25))
    assert [_green(f) for f in v.iter_frames(24, -1, -1)] == list(range(24, -1, -1))
    assert np.allclose(v.timestamps()[:3], [0, 1 / 12, 2 / 12])
    with pytest.raises(IndexError):
        v[25]


def test_short_side_resize(mp4):
    v = open_video(mp4, short_side=24)
    assert v.size_hw == (24, 32) and v[0].shape == (24, 32, 3)


def test_frame_folder_natural_order(tmp_path):
    import cv2

    for i, f in enumerate(_frames(12)):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("ignored")
    v = open_video(tmp_path)
    assert len(v) == 12 and [_green(f) for f in v] == list(range(12))
    assert v.frame_names[:3] == ["frame0", "frame1", "frame2"]
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]


def test_bad_videos(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        open_video(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        open_video(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VideoError, match="junk.mp4"):
        open_video(junk)
    folder = tmp_path / "nofr"
    folder.mkdir()
    with pytest.raises(VideoError, match="no frames"):
        open_video(folder)
    (folder / "00000.jpg").write_bytes(b"corrupt")
    with pytest.raises(VideoError, match="00000.jpg"):
        open_video(folder)


def test_truncated_video_frame_error(mp4, tmp_path):
    data = mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    # Either opening fails or some frame fails to decode; both name the file, no deep traceback.
    with pytest.raises(VideoError, match="cut.mp4"):
        v = open_video(cut)
        list(v)


def test_zero_frame_writer(tmp_path):
    w = VideoWriter(tmp_path / "z.mp4", fps=10)
    with pytest.raises(VideoError):
        w.close()
    assert not (tmp_path / "z.mp4").exists()


def test_overlay_video_and_image(tmp_path):
    frames = _frames(6)
    m = np.zeros((48, 64), bool)
    m[10:30, 10:40] = True
    masks = [{1: m, 2: ~m} for _ in frames]
    out = write_overlay_video(tmp_path / "o.mp4", frames, masks, fps=5, key_frame_idx=2,
                              boxes_xyxy={1: (10, 10, 39, 29)}, points_xy={1: [(25, 20, 1), (45, 5, 0)]},
                              text="the red square", hold_key_frame=3)
    v = open_video(out)
    assert len(v) == 9
    img = draw_overlay(frames[0], {1: m}, is_key_frame=True)
    assert img.shape == frames[0].shape and not (img == frames[0]).all()
    write_overlay_image(tmp_path / "o.png", frames[0], masks={1: m})
    assert (tmp_path / "o.png").stat().st_size > 0
    # an interrupted write leaves nothing that looks complete
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "x.mp4", fps=5) as w:
            w.write(frames[0])
            raise RuntimeError("boom")
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob(".x*"))


def test_array_video():
    v = ArrayVideo(_frames(3))
    assert len(v) == 3 and v.get_frames([2])[0].shape == (48, 64, 3)
    with pytest.raises(VideoError):
        ArrayVideo([])
