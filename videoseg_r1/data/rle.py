"""COCO RLE mask tracks kept as runs: pixel counts and bounding boxes without decoding, and decoding of
one window only. The ReVOS-style readers hand these to the evaluator's fast path (``eval/protocols.py``).

Why: on ReVOS-sized data, decoding every ground-truth frame to a full (H, W) array with pycocotools and
transposing it to row order cost about as much as reading the prediction PNG. The metrics only need the
pixels inside a window around the foreground (``metrics.content_window``), the foreground's bounds and
per-frame pixel counts; all three come straight from the run lengths.

COCO RLE: the mask is read in column-major (Fortran) order as alternating runs of 0s and 1s, starting
with 0s. The compressed string stores each run as a little-endian base-32 varint of printable characters
(char - 48: 5 data bits, 0x20 = more characters follow, 0x10 on the last one = negative), and from the
fourth run on as the difference to the run two places earlier (pycocotools ``rleFrString``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from videoseg_r1.masks import MaskError, rle_decode


@dataclass(frozen=True)
class RleTrack:
    """One mask per frame for T frames of size (H, W), as the foreground runs of their COCO RLEs.

    pos / length: (N,) int64, start (column-major pixel index within its frame) and length of every
    non-empty foreground run, frame after frame; offsets: (T + 1,) int64, frame t's runs are
    ``pos[offsets[t]:offsets[t + 1]]``.
    """

    shape: tuple[int, int]
    offsets: np.ndarray
    pos: np.ndarray
    length: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        """(T,) int64 foreground pixels per frame (what ``np.count_nonzero`` of the decoded masks gives)."""
        total = np.concatenate([[0], np.cumsum(self.length)])
        return total[self.offsets[1:]] - total[self.offsets[:-1]]

    def bounds(self, t0: int, t1: int) -> tuple[int, int, int, int] | None:
        """Inclusive (y0, y1, x0, x1) around all foreground of frames [t0, t1), or None if there is none."""
        a, b = self.offsets[t0], self.offsets[t1]
        if a == b:
            return None
        h = self.shape[0]
        first, last = self.pos[a:b], self.pos[a:b] + self.length[a:b] - 1
        c0, c1 = first // h, last // h
        if np.any(c0 != c1):  # a run wraps from the bottom of one column to the top of the next
            y0, y1 = 0, h - 1
        else:
            y0, y1 = int((first % h).min()), int((last % h).max())
        return y0, y1, int(c0.min()), int(c1.max())

    def crop(self, t0: int, t1: int, ys: slice, xs: slice) -> np.ndarray:
        """(t1 - t0, rows, cols) bool masks of frames [t0, t1) inside the window ``ys`` x ``xs``, which
        must hold all their foreground (``bounds``); only the window is ever written."""
        h = self.shape[0]
        y0, x0 = ys.start, xs.start
        bh, bw = ys.stop - ys.start, xs.stop - xs.start
        a, b = self.offsets[t0], self.offsets[t1]
        out = np.zeros((t1 - t0) * bw * bh, dtype=bool)
        if a < b:
            frame = np.repeat(np.arange(t1 - t0, dtype=np.int64), np.diff(self.offsets[t0:t1 + 1]))
            pos = self.pos[a:b]
            # pixel (row r, column c) of frame k sits at k*bw*bh + (c - x0)*bh + (r - y0) in the
            # transposed window; a run stays contiguous there (a run that wraps to the next column
            # implies the window has every row, bh = h and y0 = 0)
            start = frame * (bw * bh) + (pos // h - x0) * bh + (pos % h - y0)
            end = start + self.length[a:b]
            if start[0] < 0 or end[-1] > out.size or np.any(start[1:] < end[:-1]):
                raise ValueError("RleTrack.crop: the window does not hold all foreground of the frames")
            # alternating background / foreground lengths expand the whole window in one call
            lengths = np.empty(2 * len(start) + 1, dtype=np.int64)
            lengths[0] = start[0]
            lengths[1:-1:2] = end - start
            lengths[2:-1:2] = start[1:] - end[:-1]
            lengths[-1] = out.size - end[-1]
            values = np.zeros(len(lengths), dtype=bool)
            values[1::2] = True
            out = np.repeat(values, lengths)
        return np.ascontiguousarray(out.reshape(t1 - t0, bw, bh).transpose(0, 2, 1))

    def decode(self) -> np.ndarray:
        """(T, H, W) bool, every frame in full."""
        h, w = self.shape
        return self.crop(0, self.num_frames, slice(0, h), slice(0, w))


def _parse_counts(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Decode many compressed COCO count strings at once -> (runs (N,) int64, offsets (len + 1,))."""
    n_str = len(strings)
    if n_str == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    joined = "".join(strings)
    if not joined.isascii():
        raise ValueError("non-ASCII character in the counts string")
    c = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if c.size and (c.min() < 0 or c.max() > 63):
        raise ValueError("character outside the RLE alphabet in the counts string")
    str_end = np.cumsum([len(s) for s in strings])  # byte offset after each string
    ends = np.flatnonzero((c & 0x20) == 0)  # last character of every number
    if (str_end > 0).any() and not np.isin(str_end[str_end > 0] - 1, ends).all():
        raise ValueError("a counts string ends inside a number")
    starts = np.concatenate([[0], ends[:-1] + 1])
    nchar = ends - starts + 1
    if nchar.size and nchar.max() > 12:  # 60 bits: far beyond any frame size
        raise ValueError("a number in the counts string is too long")
    shift = 5 * (np.arange(c.size) - np.repeat(starts, nchar))
    x = np.add.reduceat((c & 0x1F) << shift, starts) if starts.size else np.zeros(0, np.int64)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(np.int64(1), 5 * nchar[negative])
    # numbers per string -> run offsets, and each number's index m inside its string
    offsets = np.concatenate([[0], np.searchsorted(ends, str_end - 1, side="right")])
    m = np.arange(x.size) - np.repeat(offsets[:-1], np.diff(offsets))
    # run m = x[m] + run[m - 2] for m > 2: running sums along the odd m >= 1 and the even m >= 2 of
    # each string (a chain restarts where a new string starts)
    runs = x.copy()
    for parity, first in ((1, 1), (0, 2)):
        sel = np.flatnonzero((m % 2 == parity) & (m >= first))
        if sel.size == 0:
            continue
        csum = np.cumsum(x[sel])
        chain_start = np.maximum.accumulate(np.where(m[sel] == first, np.arange(sel.size), 0))
        runs[sel] = csum - (csum - x[sel])[chain_start]
    return runs, offsets


def track_from_rles(rles: Sequence, shape: tuple[int, int], where: str = "RLE",
                    frame_names: Sequence[str] | None = None) -> RleTrack:
    """Per-frame COCO RLEs (compressed string or list counts; None / empty = no foreground) of one
    object -> ``RleTrack``. Malformed entries raise ``MaskError`` naming ``where`` and the frame (its
    index, or its name from ``frame_names``)."""
    h, w = int(shape[0]), int(shape[1])

    def frame(t: int) -> str:
        return f"frame {frame_names[t]}" if frame_names is not None else f"frame {t}"

    strings: list[str] = []
    frame_of: list[int] = []
    lists: dict[int, np.ndarray] = {}
    for t, r in enumerate(rles):
        if not r:
            continue
        counts = r.get("counts") if isinstance(r, dict) else None
        size = r.get("size") if isinstance(r, dict) else None
        ok_size = isinstance(size, (list, tuple)) and len(size) == 2 and all(type(v) is int for v in size) \
            and list(size) == [h, w]
        if isinstance(counts, str) and ok_size:
            strings.append(counts)
            frame_of.append(t)
        else:  # list counts, bytes, wrong sizes, garbage: the checked decoder raises or converts
            mask = rle_decode(r, (h, w), where=f"{where} {frame(t)}")
            flat = np.concatenate([[False], mask.ravel(order="F"), [False]])
            edges = np.flatnonzero(flat[1:] != flat[:-1])
            lists[t] = np.stack([edges[0::2], edges[1::2] - edges[0::2]], axis=1)
    try:
        runs, offs = _parse_counts(strings)
    except ValueError:
        for string, t in zip(strings, frame_of):  # find the frame to name
            try:
                _parse_counts([string])
            except ValueError as exc:
                raise MaskError(f"{where} {frame(t)}: malformed COCO RLE ({exc})") from None
        raise  # pragma: no cover - every string parses alone but not together
    pos_parts, len_parts = [], []
    per_frame = np.zeros(len(rles), dtype=np.int64)
    n_runs = np.diff(offs)
    run_sum = np.zeros(len(frame_of), dtype=np.int64)
    np.add.at(run_sum, np.repeat(np.arange(len(frame_of)), n_runs), runs)
    bad = (n_runs == 0) | (run_sum != h * w)
    if runs.size and (runs < 0).any():
        bad |= np.bincount(np.repeat(np.arange(len(frame_of)), n_runs), weights=runs < 0,
                           minlength=len(frame_of)) > 0
    if bad.any():
        t = frame_of[int(np.flatnonzero(bad)[0])]
        raise MaskError(f"{where} {frame(t)}: malformed COCO RLE (runs do not cover the {h}x{w} frame)")
    # column-major start of every run, then keep the non-empty foreground ones (odd runs)
    run_start = np.cumsum(runs) - runs
    m = np.arange(runs.size) - np.repeat(offs[:-1], np.diff(offs))
    if runs.size:
        run_start -= np.repeat(run_start[offs[:-1]], np.diff(offs))  # restart at 0 in every frame
    fg = (m % 2 == 1) & (runs > 0)
    fg_frame = np.repeat(np.asarray(frame_of, dtype=np.int64), np.diff(offs))[fg]
    pos_parts.append(run_start[fg])
    len_parts.append(runs[fg])
    frames_parts = [fg_frame]
    for t, pl in lists.items():
        pos_parts.append(pl[:, 0])
        len_parts.append(pl[:, 1])
        frames_parts.append(np.full(len(pl), t, dtype=np.int64))
    run_frame = np.concatenate(frames_parts)
    pos = np.concatenate(pos_parts).astype(np.int64)
    length = np.concatenate(len_parts).astype(np.int64)
    if lists:  # list-count frames were appended at the end: restore frame order (stable keeps run order)
        order = np.argsort(run_frame, kind="stable")
        run_frame, pos, length = run_frame[order], pos[order], length[order]
    per_frame += np.bincount(run_frame, minlength=len(rles))
    offsets = np.concatenate([[0], np.cumsum(per_frame)])
    return RleTrack((h, w), offsets, pos, length)
