"""ReVOS reader (and the shared reader of every ReVOS-shaped dataset: MeViS and our synthetic set).

ReVOS is the reasoning-VOS benchmark of VISA (Yan et al., ECCV 2024). Official layout
(cilinyan/ReVOS-api README, "File Structure"; one ``JPEGImages`` for both splits)::

    ROOT/JPEGImages/<video>/<frame>.jpg
    ROOT/mask_dict.json              {anno_id: [COCO RLE or null per frame]}   (train and valid)
    ROOT/mask_dict_foreground.json   {video: {"masks_rle": [RLE per frame], ...}}  (or {video: [RLE...]})
    ROOT/meta_expressions_{train,valid}_.json
        {"videos": {video: {"frames": [...], "height", "width",
                            "expressions": {exp_id: {"exp", "obj_id": [..], "anno_id": [..], "type_id"}}}}}

* Splits: ``meta_expressions_train_.json`` and ``meta_expressions_valid_.json`` (the download also
  has ``meta_expressions_train_sub_.json``); the valid meta is the benchmark.
* Video ids are paths of the source datasets (``UVO/all/-fbscFfkh4M``-style), so ``/`` between
  plain parts is allowed in ReVOS video ids (``nested_video_ids``) and frame folders nest.
* Annotated frames: every frame in the meta's ``frames``, one RLE (or ``null`` where the object is
  absent) per frame per ``anno_id``.
* Scoring (the official ``tools/eval_revos.py`` of cilinyan/VISA): per expression, the ground truth
  is the sum of its ``anno_id`` masks over every frame of ``frames``; J and F (DAVIS) and R
  (robustness against ``mask_dict_foreground``) are averaged over the frames, rounded to 2 decimals
  in percent; a missing prediction folder scores 0; the referring (``type_id`` 0) and reasoning
  (``type_id`` 1) subsets are averaged and "overall" is the mean of the two (``type_id`` 2 is
  excluded); ``eval/protocols.py``.
* Frames: the videos come from several source datasets at their own rates; ReVOS publishes no
  frame rate, so ``FRAME_RATE`` is unset (``DEFAULT_FOLDER_FPS``; ``--fps`` sets it).

Used by ``videoseg-r1 evaluate --benchmark revos``, ``predict`` and the training builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from videoseg_r1.data.base import BenchmarkReader, DatasetError, DataRootError, Expression, load_json, require_dir
from videoseg_r1.data.rle import RleTrack, track_from_rles
from videoseg_r1.masks import MaskError, rle_decode


def _decode_rles(rles: list, shape: tuple[int, int], where: str) -> np.ndarray:
    """Per-frame COCO RLEs (null = empty) -> (T, H, W) bool. Well-formed compressed RLEs go straight
    through pycocotools into the output; anything else takes the checked path whose error names the
    frame."""
    from pycocotools import mask as mask_utils

    out = np.zeros((len(rles), *shape), dtype=bool)
    size = list(shape)
    for t, r in enumerate(rles):
        if not r:
            continue
        c = r.get("counts") if isinstance(r, dict) else None
        if isinstance(c, str) and isinstance(r.get("size"), list) and [int(v) for v in r["size"]] == size:
            try:
                dec = mask_utils.decode({"size": size, "counts": c.encode("ascii")})  # (H, W) Fortran order
                out[t] = cv2.transpose(dec.T).view(bool)  # C-order copy via cv2's blocked transpose
                continue
            except Exception:
                pass
        try:
            out[t] = rle_decode(r, shape, where=f"{where} frame {t}")
        except (MaskError, TypeError, AttributeError) as exc:
            raise DatasetError(f"{where} frame {t}: malformed COCO RLE ({exc})" if not isinstance(exc, MaskError)
                               else str(exc)) from None
    return out


def _track(rles: list, shape: tuple[int, int], where: str) -> RleTrack:
    """``track_from_rles`` with the readers' error type."""
    try:
        return track_from_rles(rles, shape, where)
    except MaskError as exc:
        raise DatasetError(str(exc)) from None


class RevosStyleReader(BenchmarkReader):
    """A ReVOS-shaped dataset: a meta file, a mask_dict of per-frame RLEs, JPEG frame folders."""

    name = "revos"
    default_split = "valid"

    # paths (overridden by MeViS)
    def meta_path(self) -> Path:
        return self.root / f"meta_expressions_{self.split}_.json"

    def mask_dict_path(self) -> Path:
        return self.root / "mask_dict.json"

    def foreground_path(self) -> Path | None:
        return self.root / "mask_dict_foreground.json"

    def image_dir(self, video: str) -> Path:
        return self.join(self.root / "JPEGImages", video)

    def __init__(self, root, split=None, fps=None):
        super().__init__(root, split, fps)
        meta = self.meta_path()
        if not meta.is_file():
            raise DataRootError(f"{self.name} meta file not found: {meta} (is --data-root a {self.name} root and "
                                f"--split one of its splits?)")
        self._meta: dict | None = None
        self._mask_dict: dict | None = None
        self._fore: dict | None = None

    # -- lazily parsed files ------------------------------------------------------------------

    @property
    def mask_dict(self) -> dict:
        if self._mask_dict is None:
            data = load_json(self.mask_dict_path(), f"{self.name} mask_dict")
            if not isinstance(data, dict):
                raise DatasetError(f"malformed mask_dict {self.mask_dict_path()}: expected {{anno_id: [RLE, ...]}}")
            self._mask_dict = data
        return self._mask_dict

    @property
    def has_ground_truth(self) -> bool:
        return self.mask_dict_path().is_file()

    def _video(self, video: str) -> dict:
        try:
            v = self.meta[video]
        except KeyError:
            raise DatasetError(f"video {video!r} is not in {self.meta_path()}") from None
        if not isinstance(v, dict) or "expressions" not in v:
            raise DatasetError(f"malformed entry for video {video!r} in {self.meta_path()}: no 'expressions'")
        return v

    def _list_videos(self) -> list[str]:
        return list(self.meta.keys())

    def _listed_frames(self, video: str) -> list | None:
        frames = self._video(video).get("frames")
        return frames if isinstance(frames, list) else None

    def _frame_names(self, video: str) -> list[str]:
        v = self._video(video)
        frames = v.get("frames")
        if frames is None:
            return super()._frame_names(video)
        if not isinstance(frames, list):
            raise DatasetError(f"malformed 'frames' of video {video!r} in {self.meta_path()}")
        return list(frames)

    def frame_size(self, video: str) -> tuple[int, int]:
        v = self._video(video)
        if "height" in v and "width" in v:
            return int(v["height"]), int(v["width"])
        # MeViS metas carry no size: take it from the first annotation, else the first frame
        for e in self.expressions(video):
            for a in e.anno_ids:
                for rle in self.mask_dict.get(str(a), []) or []:
                    if rle:
                        return int(rle["size"][0]), int(rle["size"][1])
        return super().frame_size(video)

    def _expr_from_entry(self, video: str, exp_id: str, entry: dict) -> Expression:
        where = f"{self.meta_path()} [{video}/{exp_id}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"malformed expression {where}")
        obj = entry.get("obj_id", [])
        anno = entry.get("anno_id", [])
        obj = obj if isinstance(obj, list) else [obj]
        anno = anno if isinstance(anno, list) else [anno]
        type_id = entry.get("type_id")
        return Expression(video=video, exp_id=str(exp_id), text=str(entry.get("exp", "")), obj_ids=list(obj),
                          anno_ids=list(anno), type_id=None if type_id is None else int(type_id), extra={})

    def _all_expressions(self) -> list[Expression]:
        out = []
        for video in self.videos():
            exps = self._video(video)["expressions"]
            if not isinstance(exps, dict):
                raise DatasetError(f"malformed 'expressions' of video {video!r} in {self.meta_path()}")
            for exp_id, entry in exps.items():
                out.append(self._expr_from_entry(video, exp_id, entry))
        return out

    # -- masks -----------------------------------------------------------------------------
    def _track_rles(self, anno_id: Any, n_frames: int) -> tuple[list, str]:
        track = self.mask_dict.get(str(anno_id))
        where = f"{self.mask_dict_path()} [anno {anno_id}]"
        if track is None:
            raise DatasetError(f"annotation {anno_id} is not in {self.mask_dict_path()}")
        if not isinstance(track, list) or len(track) < n_frames:
            raise DatasetError(f"{where}: expected a list of {n_frames} per-frame RLEs, got "
                               f"{len(track) if isinstance(track, list) else type(track).__name__}")
        return track[:n_frames], where

    def _decode_track(self, anno_id: Any, n_frames: int, shape: tuple[int, int]) -> np.ndarray:
        rles, where = self._track_rles(anno_id, n_frames)
        return _decode_rles(rles, shape, where)

    def target_tracks(self, expr: Expression) -> list[RleTrack]:
        """The expression's targets as run-length tracks, one per listed annotation (repeats kept, as
        ``instance_masks``): what the evaluator's window-by-window path reads instead of full masks."""
        n = len(self.frame_names(expr.video))
        shape = self.frame_size(expr.video)
        cache = self.__dict__.setdefault("_track_cache", {})
        out = []
        for anno in expr.anno_ids:
            key = (str(anno), n, shape)
            if key not in cache:
                if len(cache) >= 64:  # expressions of one video share targets; keep a few videos' worth
                    cache.clear()
                rles, where = self._track_rles(anno, n)
                cache[key] = _track(rles, shape, where)
            out.append(cache[key])
        return out

    def object_masks(self, expr: Expression) -> dict[Any, np.ndarray]:
        n = len(self.frame_names(expr.video))
        shape = self.frame_size(expr.video)
        keys = expr.obj_ids if len(expr.obj_ids) == len(expr.anno_ids) else expr.anno_ids
        out: dict[Any, np.ndarray] = {}
        for key, anno in zip(keys, expr.anno_ids):
            m = self._decode_track(anno, n, shape)
            out[key] = out[key] | m if key in out else m
        return out

    def instance_masks(self, expr: Expression) -> list[np.ndarray]:
        n = len(self.frame_names(expr.video))
        shape = self.frame_size(expr.video)
        return [self._decode_track(a, n, shape) for a in expr.anno_ids]

    @property
    def has_robustness(self) -> bool:
        path = self.foreground_path()
        return path is not None and path.is_file()

    def foreground_masks(self, video: str) -> np.ndarray | None:
        """(T, H, W) bool union of every annotated object of the video (cached for the last video)."""
        cached = getattr(self, "_fore_cache", None)
        if cached is not None and cached[0] == video:
            return cached[1]
        out = self._read_foreground(video)
        self._fore_cache = (video, out)
        return out

    def foreground_counts(self, video: str) -> np.ndarray | None:
        """(T,) int64 annotated-foreground pixels per frame (the denominator of R), counted from the
        run lengths without decoding the masks (cached for the last video)."""
        cached = getattr(self, "_fore_counts", None)
        if cached is not None and cached[0] == video:
            return cached[1]
        found = self._foreground_rles(video)
        counts = None if found is None else _track(found[0], self.frame_size(video), found[1]).counts()
        self._fore_counts = (video, counts)
        return counts

    def _foreground_rles(self, video: str) -> tuple[list, str] | None:
        path = self.foreground_path()
        if path is None or not path.is_file():
            return None
        if self._fore is None:
            self._fore = load_json(path, "foreground mask file")
        entry = self._fore.get(video)
        where = f"{path} [{video}]"
        if entry is None:
            raise DatasetError(f"video {video!r} has no entry in {path}")
        rles = entry.get("masks_rle") if isinstance(entry, dict) else entry
        n = len(self.frame_names(video))
        if not isinstance(rles, list) or len(rles) < n:
            raise DatasetError(f"{where}: expected {n} per-frame RLEs")
        return rles[:n], where

    def _read_foreground(self, video: str) -> np.ndarray | None:
        found = self._foreground_rles(video)
        return None if found is None else _decode_rles(found[0], self.frame_size(video), found[1])


class RevosReader(RevosStyleReader):
    """ReVOS (reasoning video object segmentation): referring (type 0), reasoning (type 1), type 2."""

    name = "revos"
    default_split = "valid"
    nested_video_ids = True  # ids are source-dataset paths such as "UVO/all/-fbscFfkh4M"

    def __init__(self, root, split=None, fps=None):
        super().__init__(root, split, fps)
        require_dir(self.root / "JPEGImages", "ReVOS JPEGImages folder")
