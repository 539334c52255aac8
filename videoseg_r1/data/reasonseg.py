"""ReasonSeg reader (the image reasoning-segmentation benchmark of LISA, Lai et al., CVPR 2024),
each image a one-frame video.

Official layout (dvlab-research/LISA README, "ReasonSeg"; read by LISA's
``utils/reason_seg_dataset.py`` and ``utils/data_processing.py``)::

    ROOT/{train,val,test}/<name>.jpg
    ROOT/{train,val,test}/<name>.json   {"text": [query, ...], "is_sentence": bool,
                                         "shapes": [{"label": "target"|"ignore"|..., "points": [[x, y], ...]}]}

* Splits: ``train`` (239 image-instruction pairs), ``val`` (200), ``test`` (779) (LISA paper, sec. 3),
  each image with its json.
* Ground truth, rasterised exactly as LISA's ``get_mask_from_json``: polygons sorted by their own
  filled area (largest first), each outlined (1 px) and filled with cv2, label ``ignore`` -> 255
  (excluded from scoring), anything else -> 1, shapes labelled ``flag`` skipped.
* One expression per image (its first text, as LISA's validation uses), exp_id ``"0"``; the video id
  is the image name and its single frame is named after the image, so predictions go to
  ``PRED/<name>/0/<name>.png``.
* Scoring (LISA ``train_ds.py`` ``validate``): per image, intersection and union of the predicted and
  ground-truth masks (ignore pixels excluded); gIoU = mean over images of I / (U + 1e-5), an image
  whose union is empty counting 1; cIoU = sum of I / sum of U over all images (``eval/metrics.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from videoseg_r1.data.base import BenchmarkReader, DatasetError, DataRootError, Expression, require_dir
from videoseg_r1.video import ArrayVideo, Video


class ReasonSegReader(BenchmarkReader):
    name = "reasonseg"
    default_split = "val"

    def __init__(self, root, split=None, fps=None):
        super().__init__(root, split, fps)
        self.split_dir = require_dir(self.root / self.split, f"ReasonSeg split folder {self.split!r}")
        self._cache: dict[str, dict] = {}

    def names_file(self) -> Path:
        return self.split_dir

    def _list_videos(self) -> list[str]:
        return sorted(p.stem for p in self.split_dir.glob("*.json"))

    def _anno(self, name: str) -> dict:
        if name not in self._cache:
            path = self.join(self.split_dir, f"{name}.json")
            if not path.is_file():
                raise DataRootError(f"ReasonSeg annotation not found: {path}")
            try:
                raw = path.read_bytes()
                try:
                    anno = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    anno = json.loads(raw.decode("cp1252"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DatasetError(f"malformed ReasonSeg annotation {path}: {exc}") from None
            if not isinstance(anno, dict) or "shapes" not in anno or "text" not in anno:
                raise DatasetError(f"malformed ReasonSeg annotation {path}: needs 'shapes' and 'text'")
            self._cache[name] = anno
        return self._cache[name]

    def image_path(self, name: str) -> Path:
        for ext in (".jpg", ".jpeg", ".png"):
            p = self.join(self.split_dir, f"{name}{ext}")
            if p.is_file():
                return p
        raise DataRootError(f"ReasonSeg image not found: {self.split_dir / (name + '.jpg')}")

    def image_dir(self, video: str) -> Path:
        return self.split_dir

    def _frame_names(self, video: str) -> list[str]:
        return [video]

    def frame_size(self, video: str) -> tuple[int, int]:
        img = cv2.imread(str(self.image_path(video)), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DataRootError(f"cannot read image {self.image_path(video)}")
        return int(img.shape[0]), int(img.shape[1])

    def open_video(self, video: str) -> Video:
        img = cv2.imread(str(self.image_path(video)), cv2.IMREAD_COLOR)
        if img is None:
            raise DataRootError(f"cannot read image {self.image_path(video)}")
        return ArrayVideo([cv2.cvtColor(img, cv2.COLOR_BGR2RGB)], name=str(self.image_path(video)))

    def _all_expressions(self) -> list[Expression]:
        out = []
        for name in self.videos():
            anno = self._anno(name)
            texts = anno["text"] if isinstance(anno["text"], list) else [anno["text"]]
            out.append(Expression(video=name, exp_id="0", text=str(texts[0]) if texts else "", obj_ids=[1],
                                  anno_ids=[], type_id=None,
                                  extra={"is_sentence": anno.get("is_sentence"), "all_texts": texts}))
        return out

    def label_map(self, name: str) -> np.ndarray:
        """(H, W) uint8: 0 background, 1 target, 255 ignore (LISA's rasterisation)."""
        anno = self._anno(name)
        h, w = self.frame_size(name)
        shapes = []
        areas = []
        for s in anno["shapes"]:
            try:
                label = str(s["label"])
                pts = np.array([s["points"]], dtype=np.int32)
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"malformed shape in {self.split_dir / (name + '.json')}") from None
            if label.lower() == "flag":
                continue
            tmp = np.zeros((h, w), dtype=np.uint8)
            cv2.polylines(tmp, pts, True, 1, 1)
            cv2.fillPoly(tmp, pts, 1)
            areas.append(tmp.sum())
            shapes.append((label, pts))
        mask = np.zeros((h, w), dtype=np.uint8)
        for i in list(np.argsort(areas)[::-1].astype(np.int32)):
            label, pts = shapes[i]
            value = 255 if "ignore" in label.lower() else 1
            cv2.polylines(mask, pts, True, value, 1)
            cv2.fillPoly(mask, pts, value)
        return mask

    def object_masks(self, expr: Expression) -> dict[Any, np.ndarray]:
        return {1: (self.label_map(expr.video) == 1)[None]}

    def ignore_mask(self, expr: Expression) -> np.ndarray:
        """(1, H, W) bool: pixels excluded from scoring."""
        return (self.label_map(expr.video) == 255)[None]
