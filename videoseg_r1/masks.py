"""Mask conversions: COCO RLE, palette PNG (pixel value = object id), binary PNG, unions.

Used by the dataset readers, the evaluator, the synthetic generator and the pipeline's writers.
All round trips are exact. Bad files raise ``MaskError`` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from PIL import Image


class MaskError(ValueError):
    """An unreadable, malformed or mismatched mask (the message names the input)."""


def davis_palette() -> np.ndarray:
    """The DAVIS / YouTube-VOS 256-colour palette, shape (256, 3) uint8 (id 0 = black)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


# ----------------------------------------------------------------------------- RLE


def rle_encode(mask: np.ndarray) -> dict:
    """Binary mask (H, W) -> COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MaskError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8) != 0, dtype=np.uint8))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def rle_decode(rle: Mapping | None, shape: tuple[int, int] | None = None, where: str = "RLE") -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> bool mask (H, W).

    ``None`` (ReVOS's "absent in this frame") needs ``shape`` and yields an empty mask.
    """
    from pycocotools import mask as mask_utils

    if rle is None:
        if shape is None:
            raise MaskError(f"{where}: null RLE and no frame size to build an empty mask")
        return np.zeros(shape, dtype=bool)
    try:
        size = [int(v) for v in rle["size"]]
        counts = rle["counts"]
        if len(size) != 2:
            raise ValueError("size must be [H, W]")
        if isinstance(counts, list):
            obj = mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
        else:
            obj = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        out = mask_utils.decode(obj).astype(bool)
    except Exception as exc:  # pycocotools raises assorted types on garbage
        raise MaskError(f"{where}: malformed COCO RLE ({exc})") from None
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise MaskError(f"{where}: RLE size {out.shape} does not match the frame size {tuple(shape)}")
    return out


# ----------------------------------------------------------------------------- PNG


def _atomic_save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_palette_png(path: str | Path, ids: np.ndarray) -> None:
    """Write an (H, W) integer map (0 = background, k = object k, k < 256) as a palette PNG."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise MaskError(f"{path}: palette PNG needs a 2-D id map, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise MaskError(f"{path}: object ids must be in 0..255")
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette(davis_palette().reshape(-1).tolist())
    _atomic_save(img, Path(path))


def read_palette_png(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a palette PNG -> (H, W) uint8 id map. A non-palette PNG is read as its first channel."""
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"mask file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.array(img) if img.mode in ("P", "L", "1") else np.array(img.convert("L"))
    except Exception as exc:
        raise MaskError(f"cannot read mask {path}: {exc}") from None
    if arr.ndim != 2:
        arr = arr[..., 0]
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise MaskError(f"mask {path} has size {arr.shape}, expected {tuple(shape)}")
    return arr.astype(np.uint8)


def write_binary_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a bool (H, W) mask as an 8-bit PNG with values 0 / 255."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MaskError(f"{path}: binary PNG needs a 2-D mask, got shape {mask.shape}")
    _atomic_save(Image.fromarray((mask != 0).astype(np.uint8) * 255, mode="L"), Path(path))


def read_binary_png(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a PNG as a bool mask: any non-zero pixel (any channel) is foreground."""
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"mask file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.array(img)
    except Exception as exc:
        raise MaskError(f"cannot read mask {path}: {exc}") from None
    if arr.ndim == 3:
        arr = arr.any(axis=2)
    mask = arr != 0
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise MaskError(f"mask {path} has size {mask.shape}, expected {tuple(shape)}")
    return mask


# ----------------------------------------------------------------------------- combinations


def union(masks: Iterable[np.ndarray], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Logical OR of several same-shaped masks; empty input needs ``shape``."""
    out = None
    for m in masks:
        m = np.asarray(m, dtype=bool)
        if out is None:
            out = m.copy()
        else:
            if m.shape != out.shape:
                raise MaskError(f"union of masks with different shapes {out.shape} and {m.shape}")
            out |= m
    if out is None:
        if shape is None:
            raise MaskError("union of no masks needs a shape")
        return np.zeros(shape, dtype=bool)
    return out


def ids_to_masks(ids: np.ndarray, object_ids: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """(H, W) id map -> {object id: bool mask}; by default every non-zero id present."""
    ids = np.asarray(ids)
    if object_ids is None:
        object_ids = [int(v) for v in np.unique(ids) if v != 0]
    return {int(k): ids == k for k in object_ids}


def masks_to_ids(masks: Mapping[int, np.ndarray], shape: tuple[int, int] | None = None) -> np.ndarray:
    """{object id: bool (H, W)} -> (H, W) uint8 id map; later ids win where masks overlap."""
    out = None
    for obj_id in sorted(masks):
        m = np.asarray(masks[obj_id], dtype=bool)
        if out is None:
            out = np.zeros(m.shape, dtype=np.uint8)
        if not 0 < obj_id < 256:
            raise MaskError(f"object id {obj_id} does not fit a palette PNG (1..255)")
        out[m] = obj_id
    if out is None:
        if shape is None:
            raise MaskError("masks_to_ids of no masks needs a shape")
        out = np.zeros(shape, dtype=np.uint8)
    return out


def mask_box_xyxy(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight inclusive box (x1, y1, x2, y2) of a bool mask, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
