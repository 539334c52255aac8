"""Mask tracks of a whole video, stored compactly, and the writers for them.

``MaskTracks`` keeps one COCO RLE per (frame, object), so a long video's result costs memory in
proportion to the mask boundaries, not T·H·W; masks are decoded only when asked for. Used by the
pipeline (``Result.tracks``), ``segment`` (palette PNGs, RLE JSON, overlay) and ``predict`` (binary
PNGs in the layout ``evaluate`` reads).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from videoseg_r1.masks import masks_to_ids, rle_decode, rle_encode, write_binary_png, write_palette_png
from videoseg_r1.names import safe_join


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file via temp + rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


class MaskTracks:
    """Per-object binary masks (H, W) for frames 0..T-1; a frame never set reads as empty."""

    def __init__(self, num_frames: int, height: int, width: int, obj_ids: Sequence[int]):
        self.num_frames = int(num_frames)
        self.height, self.width = int(height), int(width)
        self.obj_ids = [int(o) for o in obj_ids]
        self._rles: list[dict[int, dict]] = [{} for _ in range(self.num_frames)]
        self._empty = rle_encode(np.zeros((self.height, self.width), dtype=bool))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.num_frames, self.height, self.width

    def set(self, frame_idx: int, masks: Mapping[int, np.ndarray]) -> None:
        """Store masks (bool (H, W)) of some objects at one frame."""
        for obj, mask in masks.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self.height, self.width):
                raise ValueError(f"mask of object {obj} at frame {frame_idx} has shape {mask.shape}, "
                                 f"expected {(self.height, self.width)}")
            if int(obj) not in self.obj_ids:
                self.obj_ids.append(int(obj))
            self._rles[frame_idx][int(obj)] = rle_encode(mask)

    def frame(self, frame_idx: int) -> dict[int, np.ndarray]:
        """{object id: bool (H, W)} at one frame (every object, empty where unset)."""
        rles = self._rles[frame_idx]
        return {o: rle_decode(rles.get(o, self._empty)) for o in self.obj_ids}

    def frame_union(self, frame_idx: int) -> np.ndarray:
        out = np.zeros((self.height, self.width), dtype=bool)
        for m in self.frame(frame_idx).values():
            out |= m
        return out

    def object(self, obj_id: int) -> np.ndarray:
        """(T, H, W) bool track of one object."""
        return np.stack([rle_decode(r.get(int(obj_id), self._empty)) for r in self._rles])

    def union(self) -> np.ndarray:
        """(T, H, W) bool union over all objects (the benchmarks score multi-target queries so)."""
        return np.stack([self.frame_union(t) for t in range(self.num_frames)])

    def __iter__(self) -> Iterator[dict[int, np.ndarray]]:
        for t in range(self.num_frames):
            yield self.frame(t)

    def area(self, obj_id: int) -> np.ndarray:
        """Foreground pixel count per frame, shape (T,), without decoding to full masks."""
        from pycocotools import mask as mask_utils

        out = np.zeros(self.num_frames, dtype=np.int64)
        for t, rles in enumerate(self._rles):
            r = rles.get(int(obj_id))
            if r is not None:
                out[t] = int(mask_utils.area({"size": r["size"], "counts": r["counts"].encode("ascii")}))
        return out

    # ------------------------------------------------------------------ writers (all atomic)

    def to_rle_json(self, frame_names: Sequence[str]) -> dict:
        """{"size": [H, W], "objects": {obj: {frame_name: RLE}}}; frames where an object is
        empty are stored too, so the file is self-contained."""
        return {"size": [self.height, self.width],
                "objects": {str(o): {str(frame_names[t]): self._rles[t].get(o, self._empty)
                                     for t in range(self.num_frames)} for o in self.obj_ids}}

    def write_rle_json(self, path: str | Path, frame_names: Sequence[str]) -> None:
        atomic_write_json(path, self.to_rle_json(frame_names))

    def write_palette_pngs(self, out_dir: str | Path, frame_names: Sequence[str]) -> None:
        """One palette PNG per frame, pixel value = object id (later ids win on overlap)."""
        _write_dir(out_dir, lambda d: [write_palette_png(safe_join(d, f"{frame_names[t]}.png"),
                                                         masks_to_ids(self.frame(t), (self.height, self.width)))
                                       for t in range(self.num_frames)])

    def write_binary_pngs(self, out_dir: str | Path, frame_names: Sequence[str]) -> None:
        """One binary PNG per frame of the union of all objects (the layout ``evaluate`` reads)."""
        _write_dir(out_dir, lambda d: [write_binary_png(safe_join(d, f"{frame_names[t]}.png"), self.frame_union(t))
                                       for t in range(self.num_frames)])


def _write_dir(out_dir: str | Path, fill) -> None:
    """Fill a temp sibling folder, then rename it into place: a folder either is complete or absent."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        fill(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
