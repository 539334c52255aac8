"""Scoring one expression block by block on windows: J, F, pixel counts and ReVOS's parity false
positives from mask sources that say where their foreground is and decode only a window of it.
``protocols.score_expression`` uses it for the ReVOS-shaped benchmarks (ReVOS, MeViS, synthetic); the
numbers equal ``metrics.jf`` / ``metrics.robustness`` on the full masks (tests/test_eval_windows.py).

Why: end to end, the evaluator's time went into building full frames that the metrics then mostly
ignore. Ground truth was decoded from COCO RLE to full (H, W) frames and transposed to row order, the
targets were OR-ed and the foreground masks decoded only to be counted, and the metrics then cut a
window around the foreground anyway (``metrics.content_window``). Here the ground truth stays as runs
(``data/rle.RleTrack``: bounds and counts without decoding, a window decoded on demand), and the
predicted PNGs are decoded on a small thread pool (cv2 releases the GIL) a few blocks ahead of the
block being scored (and on into the next expression), so decoding overlaps with the metrics; a block's
prediction bounds are one ``cv2.boundingRect`` of the OR of its frames.

A mask source covers T frames of one size and has ``bounds(t0, t1)`` (inclusive (y0, y1, x0, x1) around
all foreground of frames [t0, t1), or None) and ``crop(t0, t1, ys, xs)`` ((t1 - t0, rows, cols) array,
non-zero = foreground, for a window that holds all that foreground). ``score_blocks`` reads each block
once, in order.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from videoseg_r1.eval.metrics import (DEFAULT_BOUND_TH, FrameCounts, boundary_radius, content_window, jf_in_window,
                                      parity_false_positives)

BLOCK_FRAMES = 8  # frames scored together: one window per block, so small blocks crop tighter
LOOKAHEAD_FRAMES = 32  # PNG frames decoded ahead of the block being scored (bounds memory)


class MaskSource(Protocol):
    def bounds(self, t0: int, t1: int) -> tuple[int, int, int, int] | None: ...

    def crop(self, t0: int, t1: int, ys: slice, xs: slice) -> np.ndarray: ...


# ----------------------------------------------------------------------------- PNG frames

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def decode_pool() -> ThreadPoolExecutor:
    """The process's PNG decoding threads, one per core (a pool does not survive a fork: made per pid)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                                 thread_name_prefix="png-decode"))
    return _POOL[1]


def _bounding_box(frames: Sequence[np.ndarray]) -> tuple[int, int, int, int] | None:
    """Inclusive (y0, y1, x0, x1) of the non-zero pixels of some (H, W) uint8 frames: one
    ``cv2.boundingRect`` of their bitwise OR (cheaper than one per frame)."""
    import cv2

    acc = frames[0]
    if len(frames) > 1:
        acc = cv2.bitwise_or(frames[0], frames[1])
        for f in frames[2:]:
            cv2.bitwise_or(acc, f, dst=acc)
    x, y, w, h = cv2.boundingRect(acc)
    return None if w == 0 else (y, y + h - 1, x, x + w - 1)


class PngFrames:
    """An expression's predicted frames, decoded on ``decode_pool()`` up to ``LOOKAHEAD_FRAMES`` ahead
    of the block being read. ``read(path) -> (H, W) uint8`` decodes and checks one file (it raises the
    evaluator's errors, which surface when that frame is reached). Each frame is kept until its block has
    been cropped. ``close()`` cancels what is still queued.

    ``successor``: the next expression's frames, if known. Once this one has queued its last frame,
    the look-ahead continues into the successor, so the decoding threads never wait for the next
    expression to start (its ground truth is read and its first block waits on nothing)."""

    def __init__(self, paths: Sequence[str | Path], read: Callable[[str | Path], np.ndarray]):
        self.paths = list(paths)
        self._read = read
        self._pending: dict[int, Future] = {}
        self._next = 0  # next frame to submit
        self.successor: PngFrames | None = None

    def _submit_until(self, end: int) -> None:
        end = min(end, len(self.paths))
        pool = decode_pool() if self._next < end else None
        while self._next < end:
            self._pending[self._next] = pool.submit(self._read, self.paths[self._next])
            self._next += 1

    def _get(self, t: int) -> np.ndarray:
        self._submit_until(t + LOOKAHEAD_FRAMES)
        beyond = t + LOOKAHEAD_FRAMES - len(self.paths)
        if beyond > 0 and self.successor is not None:
            self.successor._submit_until(beyond)
        return self._pending[t].result()

    def bounds(self, t0: int, t1: int) -> tuple[int, int, int, int] | None:
        for t in [t for t in self._pending if t < t0]:  # blocks are read once, in order: free the earlier ones
            del self._pending[t]
        return _bounding_box([self._get(t) for t in range(t0, t1)])

    def crop(self, t0: int, t1: int, ys: slice, xs: slice) -> np.ndarray:
        return np.stack([self._get(t)[ys, xs] for t in range(t0, t1)])

    def close(self) -> None:
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()


def _union_bounds(boxes) -> tuple[int, int, int, int] | None:
    boxes = list(boxes)
    if not boxes:
        return None
    return (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))


# ----------------------------------------------------------------------------- scoring


@dataclass
class BlockScores:
    """Per frame, each (T,): J, F, the pixel counts (prediction, union of targets, intersection) and,
    when asked for, the reference ReVOS script's uint8 false-positive count (``parity_neg``)."""

    j: np.ndarray
    f: np.ndarray
    counts: FrameCounts
    parity_neg: np.ndarray | None = None


def score_blocks(pred: MaskSource, targets: Sequence[MaskSource], num_frames: int, shape: tuple[int, int],
                 bound_th: float = DEFAULT_BOUND_TH, parity_neg: bool = False) -> BlockScores:
    """J and F of ``pred`` against the union of ``targets`` (all (T, H, W) sources; no target = empty
    ground truth), block by block on the window around the block's foreground."""
    h, w = shape
    radius = boundary_radius(h, w, bound_th)
    js, fs, cs, negs = [], [], [], []
    for t0 in range(0, num_frames, BLOCK_FRAMES):
        t1 = min(num_frames, t0 + BLOCK_FRAMES)
        k = t1 - t0
        gt_bounds = [g.bounds(t0, t1) for g in targets]
        box = _union_bounds(b for b in [pred.bounds(t0, t1), *gt_bounds] if b is not None)
        if box is None:  # both empty in every frame: J = F = 1, nothing counted
            js.append(np.ones(k))
            fs.append(np.ones(k))
            z = np.zeros(k, dtype=np.int64)
            cs.append((z, z, z))
            negs.append(z)
            continue
        ys, xs = content_window(*box, h, w)
        p = pred.crop(t0, t1, ys, xs)
        inst = [g.crop(t0, t1, ys, xs) for g, b in zip(targets, gt_bounds) if b is not None]
        g = np.zeros(p.shape, dtype=bool) if not inst else inst[0] if len(inst) == 1 else np.logical_or.reduce(inst)
        j, f, c = jf_in_window(p, g, radius)
        js.append(j)
        fs.append(f)
        cs.append((c.pred, c.gt, c.inter))
        if parity_neg:
            negs.append(parity_false_positives(p != 0, inst) if len(inst) > 1 else c.pred - c.inter)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    counts = FrameCounts(*(np.concatenate([c[i] for c in cs]).astype(np.int64) if cs else np.zeros(0, np.int64)
                           for i in range(3)))
    return BlockScores(cat(js), cat(fs), counts, cat(negs).astype(np.int64) if parity_neg else None)
