"""Ref-YouTube-VOS reader (and, through ``refdavis.py``, Ref-DAVIS17 in the same converted layout).

Layout (as published)::

    ROOT/meta_expressions/{train,valid,test}/meta_expressions.json
        {"videos": {video: {"frames": [...], "expressions": {exp_id: {"exp", "obj_id": "1"}}}}}
    ROOT/{train,valid}/JPEGImages/<video>/<frame>.jpg
    ROOT/train/Annotations/<video>/<frame>.png     palette PNGs, pixel value = object id

One target per expression (its ``obj_id``). ``valid`` has no annotations: it is scored by the server
from a submission zip (``eval/submission.py``), restricted to the valid videos that are not also in
``meta_expressions/test`` (the published valid meta lists both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from videoseg_r1.data.base import (BenchmarkReader, DatasetError, DataRootError, Expression, load_json,
                                   require_dir)
from videoseg_r1.masks import MaskError, read_palette_png


class RefYtvosReader(BenchmarkReader):
    name = "refytvos"
    default_split = "valid"

    def __init__(self, root, split=None):
        super().__init__(root, split)
        if not self.meta_path().is_file():
            raise DataRootError(f"{self.name} meta file not found: {self.meta_path()} (is --data-root a "
                                f"{self.name} root and --split one of its splits?)")
        self._meta: dict | None = None

    def meta_path(self) -> Path:
        return self.root / "meta_expressions" / self.split / "meta_expressions.json"

    def image_dir(self, video: str) -> Path:
        return self.root / self.split / "JPEGImages" / video

    def annotation_dir(self, video: str) -> Path:
        return self.root / self.split / "Annotations" / video

    @property
    def has_ground_truth(self) -> bool:
        return (self.root / self.split / "Annotations").is_dir()


    def videos(self) -> list[str]:
        return list(self.meta.keys())

    def server_videos(self) -> list[str]:
        """Videos the evaluation server scores: valid minus those also listed in the test meta."""
        test = self.root / "meta_expressions" / "test" / "meta_expressions.json"
        if self.split != "valid" or not test.is_file():
            return self.videos()
        test_videos = set(load_json(test, "test meta file").get("videos", {}))
        return [v for v in self.videos() if v not in test_videos]

    def frame_names(self, video: str) -> list[str]:
        v = self.meta.get(video)
        if v is None:
            raise DatasetError(f"video {video!r} is not in {self.meta_path()}")
        if "frames" in v:
            return [str(f) for f in v["frames"]]
        return super().frame_names(video)

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
        path = self.annotation_dir(video) / f"{frame}.png"
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
