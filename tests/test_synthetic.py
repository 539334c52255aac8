"""Synthetic reasoning-VOS generator: determinism, on-disk ReVOS format, label correctness, OOD split, CLI.

Target sets are recomputed here from the generator's ground-truth trajectories, object attributes and
label maps with code written independently of ``videoseg_r1.data.synthetic``'s query finder.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from videoseg_r1.cli import main
from videoseg_r1.data import synthetic as S
from videoseg_r1.video import open_video

TINY = dict(num_videos=3, frames=8, size=(64, 48))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return S.generate(tmp_path_factory.mktemp("syn") / "a", seed=0, **TINY)


@pytest.fixture(scope="module")
def sample_videos() -> list:
    """A few dozen in-memory videos over all splits (small frames, enough for every template)."""
    out = []
    for split, n in (("train", 28), ("valid", 6), ("test_ood", 26)):
        out += [S.generate_video(7, split, i, frames=32, size=(128, 96)) for i in range(n)]
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- determinism


def test_python_api_tiny_is_fast_and_deterministic():
    import time

    t0 = time.perf_counter()
    a = S.generate_video(3, "train", 1, frames=8, size=(64, 48))
    assert time.perf_counter() - t0 < 2.0
    b = S.generate_video(3, "train", 1, frames=8, size=(64, 48))
    assert a.frames.shape == (8, 48, 64, 3) and a.frames.dtype == np.uint8
    assert a.label_maps.shape == (8, 48, 64)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.label_maps, b.label_maps)
    assert [e.text for e in a.expressions] == [e.text for e in b.expressions]
    c = S.generate_video(4, "train", 1, frames=8, size=(64, 48))
    assert not np.array_equal(a.frames, c.frames)
    assert a.mask(1).shape == (8, 48, 64) and set(a.masks_at(0)) == set(a.object_ids)


def test_same_seed_same_bytes_different_seed_differs(tiny, tmp_path):
    again = _files(S.generate(tmp_path / "b", seed=0, **TINY))
    first = _files(tiny)
    assert again.keys() == first.keys()
    assert all(again[k] == first[k] for k in first), "same seed must give identical files"
    other = _files(S.generate(tmp_path / "c", seed=1, **TINY))
    assert other["meta_expressions_train_.json"] != first["meta_expressions_train_.json"]
    assert other["JPEGImages/train_00000/00000.jpg"] != first["JPEGImages/train_00000/00000.jpg"]


def test_subsets_and_worker_count_do_not_change_videos(tiny, tmp_path):
    # 6 videos with two worker processes: the first video of each split is the one of the 3-video run
    big = S.generate(tmp_path / "big", seed=0, num_videos=8, frames=8, size=(64, 48), workers=2)
    for name in ("train_00000", "valid_00000", "test_ood_00000"):
        for t in range(8):
            rel = f"JPEGImages/{name}/{t:05d}.jpg"
            assert (big / rel).read_bytes() == (tiny / rel).read_bytes()
    for split in S.SPLITS:
        small_meta = json.loads((tiny / f"meta_expressions_{split}_.json").read_text())["videos"]
        big_meta = json.loads((big / f"meta_expressions_{split}_.json").read_text())["videos"]
        for name, v in small_meta.items():
            assert [e["exp"] for e in v["expressions"].values()] == [e["exp"] for e in big_meta[name]["expressions"].values()]


# ----------------------------------------------------------------------------- on-disk format


def test_revos_layout_read_back_with_json_and_pycocotools(tiny):
    mask_dict = json.loads((tiny / "mask_dict.json").read_text())
    fg = json.loads((tiny / "mask_dict_foreground.json").read_text())
    side = json.loads((tiny / "synthetic_meta.json").read_text())
    assert side["version"] == 1 and side["generator"]["seed"] == 0 and side["generator"]["frames"] == 8
    assert side["generator"]["size"] == [64, 48]
    all_annos = []
    num_videos = 0
    for split in S.SPLITS:
        meta = json.loads((tiny / f"meta_expressions_{split}_.json").read_text())
        assert set(meta) == {"videos"}
        for name, v in meta["videos"].items():
            num_videos += 1
            assert name.startswith(split + "_") and name[len(split) + 1:].isdigit()
            assert v["frames"] == [f"{t:05d}" for t in range(8)] and (v["height"], v["width"]) == (48, 64)
            for fr in v["frames"]:
                with Image.open(tiny / "JPEGImages" / name / f"{fr}.jpg") as im:
                    assert im.format == "JPEG" and im.size == (64, 48)
            sv = side["videos"][name]
            assert sv["split"] == split and sv["fps"] == 10.0
            objs = sv["objects"]
            assert sorted(int(k) for k in objs) == list(range(1, len(objs) + 1)) and 2 <= len(objs) <= 6
            annos = {int(k): o["anno_id"] for k, o in objs.items()}
            all_annos += list(annos.values())
            union = np.zeros((8, 48, 64), bool)
            decoded = {}
            for obj_id, anno in annos.items():
                rles = mask_dict[anno]
                assert len(rles) == 8
                m = np.zeros((8, 48, 64), bool)
                for t, rle in enumerate(rles):
                    if rle is None:
                        continue
                    assert rle["size"] == [48, 64] and isinstance(rle["counts"], str)
                    m[t] = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
                    assert m[t].any(), "empty masks are written as null"
                assert not (union & m).any(), "visible masks of different objects never overlap"
                union |= m
                decoded[obj_id] = m
            fg_masks = np.stack([mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}) for r in fg[name]])
            assert np.array_equal(fg_masks.astype(bool), union)
            assert v["expressions"], name
            for exp_id, e in v["expressions"].items():
                assert set(e) == {"exp", "obj_id", "anno_id", "type_id"} and e["exp"].strip()
                assert e["anno_id"] == [annos[o] for o in e["obj_id"]]
                extra = side["expressions"][f"{name}/{exp_id}"]
                assert extra["split"] == split and extra["num_targets"] == len(e["obj_id"])
                assert e["type_id"] == (0 if extra["tier"] == 1 else 1)
                assert 1.0 <= extra["difficulty"] <= 10.0
                assert extra["template"] in S.TEMPLATES
                s, t_end = extra["key_interval"]
                assert 0 <= s <= extra["target_frame"] <= t_end <= 7
                for o in e["obj_id"]:  # targets visible (and at least half unoccluded) at the target frame
                    area = decoded[o][extra["target_frame"]].sum()
                    assert area > 0 and area >= 0.5 * objs[str(o)]["area_px"]
    assert num_videos == 3
    assert len(set(all_annos)) == len(all_annos) == len(mask_dict)


def test_batched_rle_equals_masks_rle_encode():
    from videoseg_r1.masks import rle_encode

    v = S.generate_video(2, "valid", 0, frames=6, size=(64, 48))
    rec = S._video_record(v)
    for o in v.objects:
        for t in range(v.num_frames):
            m = v.label_maps[t] == o.obj_id
            assert rec["rles"][o.obj_id][t] == (rle_encode(m) if m.any() else None)
    assert rec["foreground"] == [rle_encode(v.label_maps[t] > 0) for t in range(v.num_frames)]


# ----------------------------------------------------------------------------- labels are right


class _Truth:
    """Ground truth recomputed from trajectories, attributes and label maps (not the finder's code)."""

    def __init__(self, v):
        self.v = v
        self.T, self.H, self.W = v.num_frames, v.height, v.width
        self.obj = {o.obj_id: o for o in v.objects}
        self.ids = sorted(self.obj)
        c = {o: v.centers_xy[o - 1] for o in self.ids}
        self.c = c
        self.vis = {o: (v.label_maps == o).sum(axis=(1, 2)) for o in self.ids}
        self.speed = {o: np.hypot(*np.diff(c[o], axis=0).T) for o in self.ids}
        self.in_frame, self.inside = {}, {}
        for o in self.ids:
            rx, ry = self.obj[o].extent_xy
            x, y = c[o][:, 0], c[o][:, 1]
            self.in_frame[o] = (x + rx >= 0) & (x - rx <= self.W - 1) & (y + ry >= 0) & (y - ry <= self.H - 1)
            self.inside[o] = (x - rx >= 0) & (x + rx <= self.W - 1) & (y - ry >= 0) & (y + ry <= self.H - 1)

    def frame(self, when):
        return 0 if when == "start" else self.T - 1

    def visible_at(self, t):
        return [o for o in self.ids if self.vis[o][t] > 0]

    def named(self, color, shape):
        hits = [o for o in self.ids if self.obj[o].color == color and self.obj[o].shape == shape]
        assert len(hits) == 1, "an anchor must be unique"
        return hits[0]

    def candidates(self, p):
        return [o for o in self.ids if all(getattr(self.obj[o], k) == p[k] for k in ("shape", "color") if k in p)]

    def enters(self, o):
        return (not self.in_frame[o][0]) and self.in_frame[o].any()

    def leaves(self, o):
        return self.in_frame[o].any() and not self.in_frame[o][-1]

    def mean_speed(self, o):
        return self.speed[o].mean()

    def pauses(self, o):
        s = self.speed[o]
        moving = np.flatnonzero(s > 0)
        return len(moving) >= 2 and any(s[i] == 0 for i in range(moving[0], moving[-1]))

    def targets(self, template, p):  # noqa: C901 - one branch per template, on purpose
        obj, ids = self.obj, self.ids
        coord = lambda o, t, ax: self.c[o][t, ax]  # noqa: E731
        if template == "color_shape":
            return {o for o in ids if obj[o].color == p["color"] and obj[o].shape == p["shape"]}
        if template in ("shape_only", "color_only", "all_of_color"):
            return set(self.candidates(p))
        if template == "size_shape":
            two = [o for o in ids if obj[o].shape == p["shape"]]
            assert len(two) == 2
            pick = max if p["size"] == "big" else min
            return {pick(two, key=lambda o: obj[o].area_px)}
        if template in ("size_extreme", "size_extreme_of_shape"):
            pool = self.candidates(p) if template.endswith("of_shape") else ids
            pick = max if p["which"] == "largest" else min
            return {pick(pool, key=lambda o: obj[o].area_px)}
        if template == "position_extreme":
            t = self.frame(p["when"])
            ax = 0 if p["side"] in ("left", "right") else 1
            pick = min if p["side"] in ("left", "top") else max
            return {pick(self.visible_at(t), key=lambda o: coord(o, t, ax))}
        if template == "relation_to_anchor":
            t = self.frame(p["when"])
            a = self.named(p["anchor_color"], p["anchor_shape"])
            assert self.vis[a][t] > 0
            ax = 0 if p["rel"] in ("left", "right") else 1
            before = p["rel"] in ("left", "above")
            return {o for o in self.visible_at(t) if o != a and obj[o].shape == p["shape"]
                    and (coord(o, t, ax) < coord(a, t, ax)) == before}
        if template == "nearest_to_anchor":
            t = self.frame(p["when"])
            a = self.named(p["anchor_color"], p["anchor_shape"])
            return {min((o for o in self.visible_at(t) if o != a), key=lambda o: np.hypot(*(self.c[o][t] - self.c[a][t])))}
        cands = self.candidates(p)
        if template == "fastest":
            return {max(cands, key=self.mean_speed)}
        if template == "never_moves":
            return {o for o in cands if not (self.speed[o] > 0).any()}
        if template == "stops":
            return {o for o in cands if self.speed[o][-1] == 0 and (self.speed[o] > 0).any()}
        if template == "pauses":
            return {o for o in cands if self.pauses(o)}
        if template == "speeds_up":
            n3 = max(1, (self.T - 1) // 3)
            return {o for o in cands if self.speed[o][:n3].mean() > 0
                    and self.speed[o][-n3:].mean() > 1.6 * self.speed[o][:n3].mean()}
        if template == "enters":
            return {o for o in cands if self.enters(o)}
        if template == "enters_order":
            comers = [o for o in cands if self.enters(o)]
            pick = min if p["order"] == "first" else max
            return {pick(comers, key=lambda o: int(np.argmax(self.in_frame[o])))}
        if template == "leaves":
            return {o for o in cands if self.leaves(o)}
        if template == "gets_hidden":
            return {o for o in cands if (self.inside[o] & (self.vis[o] < 0.55 * obj[o].area_px)).any()}
        if template == "color_of_leaver":
            (gone,) = [o for o in ids if self.leaves(o)]
            return {o for o in ids if o != gone and obj[o].color == obj[gone].color}
        if template == "shape_of_enterer":
            (new,) = [o for o in ids if self.enters(o)]
            return {o for o in ids if o != new and obj[o].shape == obj[new].shape}
        if template == "size_vs_anchor":
            a = self.named(p["anchor_color"], p["anchor_shape"])
            sign = 1 if p["cmp"] == "bigger" else -1
            return {o for o in ids if o != a and sign * (obj[o].area_px - obj[a].area_px) > 0}
        if template == "side_of_largest":
            t = self.frame(p["when"])
            big = max(ids, key=lambda o: obj[o].area_px)
            left = p["rel"] == "left"
            return {o for o in self.visible_at(t) if o != big and (coord(o, t, 0) < coord(big, t, 0)) == left}
        if template == "shape_of_fastest":
            fast = max(ids, key=self.mean_speed)
            return {o for o in ids if o != fast and obj[o].shape == obj[fast].shape}
        raise AssertionError(f"no independent check for template {template}")


def test_every_query_targets_exactly_the_objects_that_satisfy_it(sample_videos):
    seen = set()
    tiers = set()
    for v in sample_videos:
        truth = _Truth(v)
        texts = [e.text for e in v.expressions]
        assert len(texts) == len(set(texts)) and len(texts) >= 2
        for e in v.expressions:
            seen.add(e.template)
            tiers.add(e.tier)
            want = truth.targets(e.template, e.params)
            assert set(e.obj_ids) == want, (v.name, e.text, e.params, e.obj_ids, want)
            for key in ("color", "shape", "anchor_color", "anchor_shape"):
                if key in e.params:
                    assert e.params[key] in e.text, (e.text, e.params)
            assert e.type_id == (0 if e.tier == 1 else 1) and e.tier == S.TEMPLATES[e.template].tier
    assert tiers == {1, 2, 3, 4}
    missing = set(S.TEMPLATES) - seen
    assert not missing, f"templates never produced in the sample: {sorted(missing)}"
    assert any(len(e.obj_ids) > 1 for v in sample_videos for e in v.expressions if e.tier == 4)


def test_key_interval_and_target_frame_match_the_masks(sample_videos):
    for v in sample_videos:
        for e in v.expressions:
            s, end = e.key_interval
            assert 0 <= s <= e.target_frame <= end < v.num_frames
            for o in e.obj_ids:
                area = int((v.label_maps[e.target_frame] == o).sum())
                assert area >= 0.5 * v.objects[o - 1].area_px, (v.name, e.text, o)
            assert 1.0 <= e.difficulty <= 10.0
    d = {t: np.mean([e.difficulty for v in sample_videos for e in v.expressions if e.tier == t]) for t in (1, 2, 3, 4)}
    assert d[1] < d[2] < d[4] and d[1] < d[3] < d[4], d


def test_motion_kinds_occlusion_and_entering_leaving_occur(sample_videos):
    kinds = {o.motion for v in sample_videos for o in v.objects}
    assert kinds == set(S.MOTION_KINDS)
    occluded = sum(int(((v.in_frame_area_px - v.visible_area_px) > 0).any()) for v in sample_videos)
    assert occluded >= len(sample_videos) // 4


# ----------------------------------------------------------------------------- OOD split


def test_test_ood_holds_out_colour_shape_combos_and_templates(sample_videos):
    for a, b in S.HELD_OUT_COMBOS:
        assert a in S.SHAPES and b in S.COLORS_RGB
    in_dist = [v for v in sample_videos if v.split in ("train", "valid")]
    ood = [v for v in sample_videos if v.split == "test_ood"]
    assert in_dist and ood
    seen_in_dist = {(o.shape, o.color) for v in in_dist for o in v.objects}
    assert not seen_in_dist & S.HELD_OUT_COMBOS
    # every colour and every shape is still seen in train, only the combination is new
    assert {c for _, c in seen_in_dist} == set(S.COLORS_RGB) and {s for s, _ in seen_in_dist} == set(S.SHAPES)
    assert all(any((o.shape, o.color) in S.HELD_OUT_COMBOS for o in v.objects) for v in ood)

    def phrasing(e):
        tag, j = e.phrasing_id.split(":")
        t = S.TEMPLATES[e.template]
        return (t.ood_phrasings if tag == "ood" else t.phrasings)[int(j)]

    id_phrasings = {phrasing(e) for v in in_dist for e in v.expressions}
    ood_phrasings = {phrasing(e) for v in ood for e in v.expressions}
    assert not id_phrasings & ood_phrasings
    assert all(not set(t.phrasings) & set(t.ood_phrasings) for t in S.TEMPLATES.values())
    id_templates = {e.template for v in in_dist for e in v.expressions}
    ood_templates = {e.template for v in ood for e in v.expressions}
    assert S.OOD_ONLY_TEMPLATES and not id_templates & S.OOD_ONLY_TEMPLATES
    assert S.OOD_ONLY_TEMPLATES <= ood_templates
    id_texts = {e.text for v in in_dist for e in v.expressions}
    assert not id_texts & {e.text for v in ood for e in v.expressions}


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_dataset_and_overlay(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["synth", "--out", str(out), "--videos", "3", "--frames", "8", "--size", "64x48", "--seed", "5",
               "--overlay", "1"])
    assert rc == 0
    for name in ("mask_dict.json", "mask_dict_foreground.json", "meta_expressions_train_.json",
                 "meta_expressions_valid_.json", "meta_expressions_test_ood_.json", "synthetic_meta.json"):
        assert (out / name).is_file()
    overlays = sorted((out / "overlays").glob("*.mp4"))
    assert len(overlays) == 1
    video = open_video(overlays[0])
    assert len(video) == 8 and video.size_hw == (48, 64)
    printed = capsys.readouterr().out
    assert str(overlays[0]) in printed and "wrote 3 videos" in printed
    assert not list(tmp_path.glob(".*synth-tmp*"))
    # a previous synth output is replaced without --overwrite; only the given splits are written
    assert main(["synth", "--out", str(out), "--videos", "2", "--frames", "4", "--size", "64x48",
                 "--splits", "valid"]) == 0
    assert not (out / "meta_expressions_train_.json").exists() and not (out / "overlays").exists()


@pytest.mark.parametrize("argv, words", [
    (["--videos", "0"], "--videos"),
    (["--size", "64by48"], "--size"),
    (["--size", "10x10"], "--size"),
    (["--frames", "1"], "--frames"),
    (["--splits", "train,test"], "--splits"),
])
def test_cli_bad_options_give_one_line_error(tmp_path, capsys, argv, words):
    out = tmp_path / "bad"
    rc = main(["synth", "--out", str(out), "--frames", "4", "--size", "64x48", *argv])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and words in err, err
    assert not out.exists()


def test_refuses_foreign_non_empty_dir_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = ["synth", "--out", str(out), "--videos", "1", "--frames", "4", "--size", "64x48"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert (out / "notes.txt").read_text() == "keep me"
    assert main(args + ["--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and (out / "synthetic_meta.json").is_file()


def test_interrupted_run_leaves_nothing_complete_looking(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "_write_dataset", boom)
    with pytest.raises(KeyboardInterrupt):
        S.generate(tmp_path / "x", num_videos=1, frames=4, size=(64, 48))
    assert list(tmp_path.iterdir()) == []
