"""Ref-YouTube-VOS reader (and, through ``refdavis.py``, Ref-DAVIS17 in the same converted layout).

Official layout (the download linked from the organisers' page, youtube-vos.org/dataset/rvos; read
the same way by ReferFormer ``inference_ytvos.py`` / ``datasets/ytvos.py`` and VISA
``utils/rvos_eval_dataset.py``)::

    ROOT/meta_expressions/{train,valid,test}/meta_expressions.json
        {"videos": {video: {"frames": ["00000", "00005", ...],
                            "expressions": {exp_id: {"exp": text, "obj_id": "1"}}}}}
    ROOT/{train,valid}/JPEGImages/<video>/<frame>.jpg
    ROOT/train/Annotations/<video>/<frame>.png     palette PNGs, pixel value = object id

* Splits: ``train`` has frames, palette annotations and its meta; ``valid`` has frames and a meta
  but no annotations; ``test`` has a meta only. The published ``valid`` meta lists the 202 valid
  videos *and* the 305 test videos, and ``valid/JPEGImages`` holds frames only for the 202. The
  reference tools score valid minus the videos of the test meta: ReferFormer's
  ``inference_ytvos.py`` does ``valid_videos = valid_test_videos - test_videos`` and asserts 202
  videos; VISA ships the same list (``utils/d2_datasets/refytvos_val_videos.py``). So does this
  reader: ``valid`` is the valid meta minus the test meta (which must be present).
* Scoring: ``valid`` is scored by the organisers' server from a zip of
  ``Annotations/<video>/<exp_id>/<frame>.png`` (mode L, 0/255, frame size), one PNG per frame of the
  meta's ``frames`` (``eval/submission.py``); ``train`` can be scored offline (J, F averaged over the
  frames of each expression, then over expressions).
* Frames: YouTube-VOS videos are 30 fps and annotated every 5th frame (URVOS, Seo et al., ECCV
  2020, sec. 3: "pixel-level instance segmentation annotation at every 5 frames in 30-fps videos";
  YouTube-VOS, Xu et al. 2018). The frame folders hold those frames, named by their index in the
  30 fps video (``00000``, ``00005``, ...), so they are 6 fps (``FRAME_RATE``). Every frame of
  ``train/JPEGImages`` has an annotation PNG.
* One target per expression (its ``obj_id``, a string); each object has a full-video and a
  first-frame expression (URVOS sec. 3), not marked in the meta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from videoseg_r1.data.base import (BenchmarkReader, DatasetError, DataRootError, Expression, load_json,
                                   require_dir)
from videoseg_r1.masks import MaskError, read_palette_png

YTVOS_FRAME_RATE = 6.0  # every 5th frame of a 30 fps video (URVOS sec. 3)


class RefYtvosReader(BenchmarkReader):
    name = "refytvos"
    default_split = "valid"
    FRAME_RATE = YTVOS_FRAME_RATE

    def __init__(self, root, split=None, fps=None):
        super().__init__(root, split, fps)
        if not self.meta_path().is_file():
            raise DataRootError(f"{self.name} meta file not found: {self.meta_path()} (is --data-root a "
                                f"{self.name} root and --split one of its splits?)")
        self._meta: dict | None = None

    def meta_path(self) -> Path:
        return self.root / "meta_expressions" / self.split / "meta_expressions.json"

    def test_meta_path(self) -> Path:
        return self.root / "meta_expressions" / "test" / "meta_expressions.json"

    def image_dir(self, video: str) -> Path:
        return self.join(self.root / self.split / "JPEGImages", video)

    def annotation_dir(self, video: str) -> Path:
        return self.join(self.root / self.split / "Annotations", video)

    @property
    def has_ground_truth(self) -> bool:
        return (self.root / self.split / "Annotations").is_dir()

    def excluded_videos(self) -> set[str]:
        """Videos of the meta that are not part of the split: for ``valid``, those of the test meta."""
        if self.split != "valid":
            return set()
        test = self.test_meta_path()
        if not test.is_file():
            raise DataRootError(f"{test} not found: Ref-YouTube-VOS valid is the valid meta minus the videos of "
                                f"the test meta (the valid meta also lists the test videos, which have no frames)")
        data = load_json(test, "Ref-YouTube-VOS test meta file")
        if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
            raise DatasetError(f"malformed Ref-YouTube-VOS test meta file {test}: expected {{\"videos\": {{...}}}}")
        return set(data["videos"])

    def _list_videos(self) -> list[str]:
        excluded = self.excluded_videos()
        return [v for v in self.meta.keys() if v not in excluded]

    def server_videos(self) -> list[str]:
        """Videos the evaluation server scores (for ``valid``: valid minus test, as ``videos()``)."""
        return self.videos()

    def _listed_frames(self, video: str) -> list | None:
        v = self.meta.get(video)
        return v["frames"] if isinstance(v, dict) and isinstance(v.get("frames"), list) else None

    def _frame_names(self, video: str) -> list[str]:
        v = self.meta.get(video)
        if v is None:
            raise DatasetError(f"video {video!r} is not in {self.meta_path()}")
        if isinstance(v, dict) and "frames" in v:
            if not isinstance(v["frames"], list):
                raise DatasetError(f"malformed 'frames' of video {video!r} in {self.meta_path()}")
            return list(v["frames"])
        return super()._frame_names(video)

    def _all_expressions(self) -> list[Expression]:
        out = []
        for video in self.videos():
            v = self.meta[video]
            exps = v.get("expressions") if isinstance(v, dict) else None
            if not isinstance(exps, dict):
                raise DatasetError(f"malformed entry for video {video!r} in {self.meta_path()}: no 'expressions'")
            for exp_id, e in exps.items():
                if not isinstance(e, dict):
                    raise DatasetError(f"malformed expression {video}/{exp_id} in {self.meta_path()}")
                obj = e.get("obj_id")
                out.append(Expression(video=video, exp_id=str(exp_id), text=str(e.get("exp", "")),
                                      obj_ids=[] if obj is None else [str(obj)], anno_ids=[], type_id=None,
                                      extra={}))
        return out

    def read_annotation(self, video: str, frame: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W) uint8 id map of one annotated frame."""
        path = self.join(self.annotation_dir(video), f"{frame}.png")
        if not path.is_file():
            raise DataRootError(f"annotation not found: {path}")
        try:
            return read_palette_png(path, shape)
        except MaskError as exc:
            raise DatasetError(str(exc)) from None

    def id_maps(self, video: str) -> np.ndarray:
        """(T, H, W) uint8 object-id maps of every frame of the video (cached for the last video)."""
        cached = getattr(self, "_ids_cache", None)
        if cached is not None and cached[0] == video:
            return cached[1]
        out = self._read_id_maps(video)
        out.setflags(write=False)
        self._ids_cache = (video, out)
        return out

    def _read_id_maps(self, video: str) -> np.ndarray:
        require_dir(self.annotation_dir(video), f"annotation folder of video {video!r}")
        frames = self.frame_names(video)
        first = self.read_annotation(video, frames[0])
        out = np.zeros((len(frames), *first.shape), dtype=np.uint8)
        out[0] = first
        for t, fr in enumerate(frames[1:], start=1):
            out[t] = self.read_annotation(video, fr, first.shape)
        return out

    def frame_size(self, video: str) -> tuple[int, int]:
        if self.has_ground_truth and self.annotation_dir(video).is_dir():
            return tuple(self.read_annotation(video, self.frame_names(video)[0]).shape)  # type: ignore[return-value]
        return super().frame_size(video)

    def object_masks(self, expr: Expression) -> dict[Any, np.ndarray]:
        ids = self.id_maps(expr.video)
        out = {}
        for obj in expr.obj_ids:
            try:
                k = int(obj)
            except ValueError:
                raise DatasetError(f"obj_id {obj!r} of {expr.key} in {self.meta_path()} is not an integer") from None
            out[obj] = ids == k
        return out
