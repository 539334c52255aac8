"""ReasonVOS reader (the reasoning video segmentation benchmark of VideoLISA, Bai et al., NeurIPS 2024).

Official layout (``BENCHMARK.md`` and ``benchmark_check.py`` of showlab/VideoLISA; one split, the
whole set is a test set)::

    ROOT/meta_expressions.json
        {"videos": {video: {"source": "MeViS" | "MOSE" | "BURST" | "VIPSeg", "frames": [...],
                            "is_sent": bool,
                            "expressions": {key: {"obj_id": ..., "exp_text": text, ...}}}}}
    ROOT/JPEGImages/<video>/<frame>.jpg
    ROOT/Annotations/<source>_<video>_<obj_id>/<frame>.png   masks, non-zero = target

* ``expressions`` is a dict in the official file (both official scripts index
  ``vid['expressions'][exp]``); a list of entries with ``exp_id`` (an older form) is read too.
  ``exp_id`` is the entry's own ``exp_id`` if it has one, else its key.
* Mask folders: ``benchmark_check.py`` names them with the lower-cased source, the official
  ``evaluation/reason_vos/eval_reason_vos.py`` with the source as written; both are tried.
* Scoring (``eval_reason_vos.py``): per expression, J and F over the PNGs of its mask folder in
  sorted order (the annotated frames), the prediction read from ``PRED/<video>/<id>/<frame>.png``;
  a missing mask or prediction folder is skipped ("not take into metric computation", our
  ``--missing skip``); the means over expressions are reported. The official inference writes
  one folder per object id, so two expressions of one object share a folder there.
* Frames: the videos come from MeViS, MOSE, BURST and VIPSeg, at their sources' rates; the
  benchmark publishes none, so ``FRAME_RATE`` is unset (``DEFAULT_FOLDER_FPS``; ``--fps`` sets it).

The split argument is ignored (``test``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from videoseg_r1.data.base import (BenchmarkReader, DatasetError, DataRootError, Expression,
                                   require_dir)
from videoseg_r1.masks import MaskError, read_binary_png


class ReasonVosReader(BenchmarkReader):
    name = "reasonvos"
    default_split = "test"

    def __init__(self, root, split=None, fps=None):
        super().__init__(root, split, fps)
        if not self.meta_path().is_file():
            raise DataRootError(f"ReasonVOS meta file not found: {self.meta_path()}")
        require_dir(self.root / "Annotations", "ReasonVOS Annotations folder")
        self._meta: dict | None = None

    def meta_path(self) -> Path:
        return self.root / "meta_expressions.json"


    def _list_videos(self) -> list[str]:
        return list(self.meta.keys())

    def _listed_frames(self, video: str) -> list | None:
        v = self.meta.get(video) or {}
        return v["frames"] if isinstance(v.get("frames"), list) else None

    def _frame_names(self, video: str) -> list[str]:
        v = self.meta.get(video) or {}
        if isinstance(v.get("frames"), list):
            return list(v["frames"])
        return super()._frame_names(video)

    def _all_expressions(self) -> list[Expression]:
        out = []
        for video in self.videos():
            v = self.meta[video]
            if not isinstance(v, dict) or "expressions" not in v:
                raise DatasetError(f"malformed entry for video {video!r} in {self.meta_path()}: no 'expressions'")
            exps = v["expressions"]
            items = list(exps.items()) if isinstance(exps, dict) else list(enumerate(exps))
            for key, e in items:
                if not isinstance(e, dict) or "obj_id" not in e:
                    raise DatasetError(f"malformed expression {video}/{key} in {self.meta_path()}: needs 'obj_id'")
                exp_id = str(e.get("exp_id", key))
                text = e.get("exp_text", e.get("exp", ""))
                source = self.check_name(v.get("source", ""), "source", entry=f"video {video!r}") \
                    if v.get("source") else ""
                out.append(Expression(video=video, exp_id=exp_id, text=str(text), obj_ids=[e["obj_id"]],
                                      anno_ids=[], type_id=None,
                                      extra={"source": source,
                                             "is_sent": e.get("is_sent", v.get("is_sent"))}))
        return out

    def annotation_dir(self, expr: Expression) -> Path:
        src = str(expr.extra.get("source", ""))
        for s in dict.fromkeys([src, src.lower()]):
            d = self.join(self.root / "Annotations", f"{s}_{expr.video}_{expr.obj_ids[0]}")
            if d.is_dir():
                return d
        raise DataRootError(f"annotation folder not found: "
                            f"{self.root / 'Annotations' / f'{src}_{expr.video}_{expr.obj_ids[0]}'}")

    def eval_frames(self, expr: Expression) -> list[str]:
        d = self.annotation_dir(expr)
        return sorted(p.stem for p in d.iterdir() if p.suffix.lower() == ".png")

    def frame_size(self, video: str) -> tuple[int, int]:
        for e in self.expressions(video):
            d = self.annotation_dir(e)
            frames = self.eval_frames(e)
            if frames:
                return tuple(read_binary_png(d / f"{frames[0]}.png").shape)  # type: ignore[return-value]
        return super().frame_size(video)

    def object_masks(self, expr: Expression) -> dict[Any, np.ndarray]:
        d = self.annotation_dir(expr)
        frames = self.eval_frames(expr)
        if not frames:
            raise DatasetError(f"annotation folder {d} holds no PNG masks")
        try:
            first = read_binary_png(d / f"{frames[0]}.png")
            out = np.zeros((len(frames), *first.shape), dtype=bool)
            out[0] = first
            for t, fr in enumerate(frames[1:], start=1):
                out[t] = read_binary_png(d / f"{fr}.png", first.shape)
        except MaskError as exc:
            raise DatasetError(str(exc)) from None
        return {expr.obj_ids[0]: out}
