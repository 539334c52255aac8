"""Video input and overlay output: one reader interface for video files and frame folders.

``open_video(path)`` returns a ``Video`` that knows its length, fps and size, streams frames
(RGB uint8, (H, W, 3)), and gives random access by index or by a list of indices, decoding no more
than needed. Files go through PyAV; folders of jpg/png frames are read in natural sort order.
``write_overlay_video`` / ``draw_overlay`` render masks, boxes, points and the key frame.
Used by the pipeline, the dataset readers, the synthetic generator and the demo.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np


VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}
DEFAULT_FOLDER_FPS = 30.0  # frame folders carry no rate; ours, overridable


class VideoError(ValueError):
    """A missing, unreadable, empty or corrupt video (the message names the file)."""


def natural_key(name: str) -> list:
    """Sort key that orders 'frame2' before 'frame10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def resize_short_side(frame: np.ndarray, short_side: int | None) -> np.ndarray:
    """Resize so that min(H, W) == short_side (aspect kept); None or equal size -> unchanged."""
    if not short_side:
        return frame
    h, w = frame.shape[:2]
    scale = short_side / min(h, w)
    if scale == 1.0:
        return frame
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(frame, (new_w, new_h), interpolation=interp)


class Video:
    """Common interface. Frames are RGB uint8 arrays of shape (H, W, 3).

    ``height``/``width`` are the size of the frames returned (after the optional shorter-side
    resize); ``orig_height``/``orig_width`` the stored size.
    """

    path: Path
    fps: float
    orig_height: int
    orig_width: int
    short_side: int | None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def size_hw(self) -> tuple[int, int]:
        if not self.short_side:
            return self.orig_height, self.orig_width
        scale = self.short_side / min(self.orig_height, self.orig_width)
        return max(1, round(self.orig_height * scale)), max(1, round(self.orig_width * scale))

    @property
    def height(self) -> int:
        return self.size_hw[0]

    @property
    def width(self) -> int:
        return self.size_hw[1]

    def timestamps(self) -> np.ndarray:
        """Seconds of each frame from the start, shape (T,)."""
        return np.arange(len(self), dtype=np.float64) / self.fps

    def _check_index(self, idx: int) -> int:
        n = len(self)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"frame index {idx} out of range for {self.path} ({n} frames)")
        return idx

    def __getitem__(self, idx: int) -> np.ndarray:
        return self.get_frames([idx])[0]

    def get_frames(self, indices: Sequence[int]) -> list[np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_frames()

    def iter_frames(self, start: int = 0, stop: int | None = None, step: int = 1) -> Iterator[np.ndarray]:
        """Stream frames start, start+step, ... < stop (negative step streams backwards)."""
        stop = len(self) if stop is None else stop
        for i in range(start, stop, step):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, frames={len(self)}, fps={self.fps:g}, size={self.height}x{self.width})"


class FrameFolderVideo(Video):
    """A folder of jpg/png frames in natural sort order."""

    def __init__(self, path: str | Path, short_side: int | None = None, fps: float = DEFAULT_FOLDER_FPS,
                 frame_names: Sequence[str] | None = None):
        self.path = Path(path)
        self.short_side = short_side
        self.fps = float(fps)
        if frame_names is None:
            files = [p.name for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
            frame_names = sorted(files, key=natural_key)
        self.files = [self.path / n for n in frame_names]
        if not self.files:
            raise VideoError(f"no frames (jpg/png) in folder {self.path}")
        first = self._read(0, resize=False)
        self.orig_height, self.orig_width = first.shape[:2]

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, idx: int, resize: bool = True) -> np.ndarray:
        path = self.files[idx]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            if not path.exists():
                raise VideoError(f"frame file not found: {path}")
            raise VideoError(f"cannot decode frame {idx} of {self.path}: {path.name} is not a readable image")
        frame = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if resize and getattr(self, "orig_height", None) is not None and frame.shape[:2] != (self.orig_height, self.orig_width):
            raise VideoError(f"frame {path} has size {frame.shape[:2]}, the folder's first frame has "
                             f"{(self.orig_height, self.orig_width)}")
        return resize_short_side(frame, self.short_side) if resize else frame

    def get_frames(self, indices: Sequence[int]) -> list[np.ndarray]:
        return [self._read(self._check_index(int(i))) for i in indices]


class FileVideo(Video):
    """A video file read through PyAV. Opening demuxes (no decoding) to index every frame's pts,
    so the length is exact and random access seeks to the nearest keyframe before the target."""

    def __init__(self, path: str | Path, short_side: int | None = None):
        import av

        self.path = Path(path)
        self.short_side = short_side
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise VideoError(f"{self.path} has no video stream")
                stream = container.streams.video[0]
                self._time_base = stream.time_base or Fraction(1, 1)
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                self.orig_width = int(stream.codec_context.width)
                self.orig_height = int(stream.codec_context.height)
                pts = []
                keyframe_pts = []
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.pts is None:
                        continue
                    pts.append(int(packet.pts))
                    if packet.is_keyframe:
                        keyframe_pts.append(int(packet.pts))
        except VideoError:
            raise
        except Exception as exc:  # av raises InvalidDataError, etc.
            raise VideoError(f"cannot read video {self.path}: {exc}") from None
        if not pts:
            raise VideoError(f"video {self.path} has no frames")
        self._pts = np.array(sorted(pts), dtype=np.int64)
        self._pts_to_index = {p: i for i, p in enumerate(self._pts.tolist())}
        self._keyframe_idx = np.array(sorted(self._pts_to_index[p] for p in keyframe_pts), dtype=np.int64)
        if rate:
            self.fps = float(rate)
        elif len(self._pts) > 1:
            self.fps = float((len(self._pts) - 1) / ((self._pts[-1] - self._pts[0]) * self._time_base))
        else:
            self.fps = DEFAULT_FOLDER_FPS
        if self.orig_width <= 0 or self.orig_height <= 0:
            raise VideoError(f"video {self.path} reports an invalid frame size")

    def __len__(self) -> int:
        return len(self._pts)

    def timestamps(self) -> np.ndarray:
        return (self._pts - self._pts[0]).astype(np.float64) * float(self._time_base)

    def _decode_range(self, wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, frame) for the sorted, unique ``wanted`` indices. Decoding continues
        forward from the last frame unless the next target lies past a keyframe (or behind us),
        in which case it seeks to that keyframe: no frame is decoded that is not needed to reach
        a target."""
        import av

        wanted = list(wanted)
        if not wanted:
            return
        target = wanted[0]
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                frames, pos = None, -1  # decoder generator, index of the last decoded frame
                for target in wanted:
                    kf_pos = int(np.searchsorted(self._keyframe_idx, target, side="right")) - 1
                    kf = int(self._keyframe_idx[kf_pos]) if kf_pos >= 0 else 0
                    if frames is None or target <= pos or kf > pos + 1:
                        container.seek(int(self._pts[kf]), stream=stream, backward=True, any_frame=False)
                        frames, pos = container.decode(stream), -1
                    restarted = False
                    while True:
                        frame = next(frames, None)
                        if frame is None:
                            raise VideoError(f"cannot decode frame {target} of {self.path}: the stream ended early")
                        idx = self._pts_to_index.get(frame.pts)
                        if idx is None:
                            continue
                        if idx > target:  # seek landed past the target: decode from the start once
                            if restarted:
                                raise VideoError(f"cannot decode frame {target} of {self.path}")
                            container.seek(int(self._pts[0]), stream=stream, backward=True, any_frame=False)
                            frames, pos, restarted = container.decode(stream), -1, True
                            continue
                        pos = idx
                        if idx == target:
                            yield idx, resize_short_side(frame.to_ndarray(format="rgb24"), self.short_side)
                            break
        except VideoError:
            raise
        except Exception as exc:
            raise VideoError(f"cannot decode frame {target} of {self.path}: {exc}") from None

    def get_frames(self, indices: Sequence[int]) -> list[np.ndarray]:
        idx = [self._check_index(int(i)) for i in indices]
        unique = sorted(set(idx))
        got = dict(self._decode_range(unique))
        return [got[i] for i in idx]

    def iter_frames(self, start: int = 0, stop: int | None = None, step: int = 1) -> Iterator[np.ndarray]:
        stop = len(self) if stop is None else stop
        wanted = list(range(start, stop, step))
        if step > 0:
            for _, frame in self._decode_range(wanted):
                yield frame
        else:  # backwards: decode in chunks between keyframes, newest chunk first
            chunk = 32
            for s in range(0, len(wanted), chunk):
                part = wanted[s:s + chunk]
                frames = dict(self._decode_range(sorted(part)))
                for i in part:
                    yield frames[i]


def as_video(video, fps: float | None = None) -> Video:
    """A ``Video`` from a ``Video``, a file or folder path, a (T, H, W, 3) uint8 array, or a list of
    (H, W, 3) uint8 frames (arrays at ``fps``, default that of a frame folder)."""
    if isinstance(video, Video):
        return video
    if isinstance(video, (str, Path)):
        return open_video(video, fps=fps)
    frames = list(video) if isinstance(video, (list, tuple)) or (isinstance(video, np.ndarray) and video.ndim == 4) \
        else None
    if frames is None:
        raise VideoError(f"cannot read a video from {type(video).__name__}: give a path, a (T, H, W, 3) uint8 "
                         f"array or a list of (H, W, 3) uint8 frames")
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8 or f.shape[:2] != np.asarray(frames[0]).shape[:2]:
            raise VideoError(f"frame {i} of the given frames is {f.dtype} {f.shape}; every frame must be "
                             f"(H, W, 3) uint8 RGB of one size")
        frames[i] = f
    return ArrayVideo(frames, fps=fps or DEFAULT_FOLDER_FPS)


def open_video(path: str | Path, short_side: int | None = None, fps: float | None = None) -> Video:
    """Open a video file (mp4, mov, avi, webm, ...) or a folder of frames."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video not found: {p}")
    if p.is_dir():
        return FrameFolderVideo(p, short_side=short_side, fps=fps or DEFAULT_FOLDER_FPS)
    if p.stat().st_size == 0:
        raise VideoError(f"video file {p} is empty")
    video = FileVideo(p, short_side=short_side)
    if fps:
        video.fps = float(fps)
    return video


class ArrayVideo(Video):
    """In-memory frames (tests, one-image 'videos' of image benchmarks)."""

    def __init__(self, frames: Sequence[np.ndarray], fps: float = DEFAULT_FOLDER_FPS, short_side: int | None = None,
                 name: str = "<array>"):
        if len(frames) == 0:
            raise VideoError(f"video {name} has no frames")
        self.frames = list(frames)
        self.path = Path(name)
        self.fps = float(fps)
        self.short_side = short_side
        self.orig_height, self.orig_width = self.frames[0].shape[:2]

    def __len__(self) -> int:
        return len(self.frames)

    def get_frames(self, indices: Sequence[int]) -> list[np.ndarray]:
        return [resize_short_side(self.frames[self._check_index(int(i))], self.short_side) for i in indices]


# ----------------------------------------------------------------------------- overlays

# Bright, distinct overlay colours (the DAVIS palette's first colours are too dark to see on video).
_OVERLAY_COLORS = [(255, 40, 40), (40, 220, 60), (50, 120, 255), (255, 220, 0), (255, 0, 255),
                   (0, 230, 230), (255, 140, 0), (160, 80, 255), (255, 255, 255), (120, 255, 160)]


def object_color(obj_id: int) -> tuple[int, int, int]:
    """RGB overlay colour of an object id (1 -> red, 2 -> green, 3 -> blue, ...)."""
    return _OVERLAY_COLORS[(int(obj_id) - 1) % len(_OVERLAY_COLORS)]


def draw_overlay(frame: np.ndarray, masks: Mapping[int, np.ndarray] | None = None,
                 boxes_xyxy: Mapping[int, Sequence[float]] | None = None,
                 points_xy: Mapping[int, Sequence[tuple[float, float, int]]] | None = None,
                 is_key_frame: bool = False, text: str | None = None, alpha: float = 0.5) -> np.ndarray:
    """Return a copy of an RGB frame with masks (blended, outlined), boxes, points
    ((x, y, label): label 1 = green disc, 0 = red cross), a key-frame border and a caption."""
    out = frame.astype(np.float32).copy()
    h, w = frame.shape[:2]
    masks = masks or {}
    for obj_id, mask in masks.items():
        m = np.asarray(mask, dtype=bool)
        if m.shape != (h, w):
            m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        color = np.array(object_color(obj_id), dtype=np.float32)
        out[m] = out[m] * (1 - alpha) + color * alpha
    out = out.clip(0, 255).astype(np.uint8)
    for obj_id, mask in masks.items():
        m = np.asarray(mask, dtype=np.uint8)
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 2)
        cv2.drawContours(out, contours, -1, object_color(obj_id), 1)
    for obj_id, box in (boxes_xyxy or {}).items():
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), object_color(obj_id), 2)
    r = max(2, min(h, w) // 80)
    for obj_id, pts in (points_xy or {}).items():
        for x, y, label in pts:
            c = (int(round(x)), int(round(y)))
            if label:
                cv2.circle(out, c, r + 1, (255, 255, 255), -1)
                cv2.circle(out, c, r, (0, 200, 0), -1)
            else:
                cv2.drawMarker(out, c, (255, 0, 0), cv2.MARKER_TILTED_CROSS, 3 * r, 2)
    if is_key_frame:
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), (255, 215, 0), max(3, min(h, w) // 60))
        cv2.putText(out, "KEY FRAME", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 215, 0), 1, cv2.LINE_AA)
    if text:
        _draw_caption(out, text)
    return out


def _draw_caption(img: np.ndarray, text: str, max_lines: int = 4) -> None:
    h, w = img.shape[:2]
    scale = 0.4
    char_w = 7
    per_line = max(10, (w - 16) // char_w)
    words, lines, cur = text.split(), [], ""
    for word in words:
        if len(cur) + len(word) + 1 > per_line:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: per_line - 3] + "..."
    band = 14 * len(lines) + 6
    img[:band] = (img[:band].astype(np.float32) * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(img, line, (6, 14 + 14 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def write_overlay_image(path: str | Path, frame: np.ndarray, **overlay) -> None:
    """Write one overlay frame as PNG/JPEG (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = draw_overlay(frame, **overlay)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write image {path}")
    os.replace(tmp, path)


class VideoWriter:
    """H.264 mp4 writer (PyAV, yuv420p). Writes to a temp file renamed on ``close()``, so an
    interrupted write never leaves a complete-looking file. Odd sizes are padded to even."""

    def __init__(self, path: str | Path, fps: float, crf: int = 23):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}.mp4")
        self._container = av.open(str(self._tmp), mode="w")
        self._fps = Fraction(fps).limit_denominator(1001)
        self._crf = crf
        self._stream = None
        self._count = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        h, w = frame.shape[:2]
        ph, pw = h + (h % 2), w + (w % 2)
        if (ph, pw) != (h, w):
            frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self._fps)
            self._stream.width, self._stream.height = pw, ph
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self._crf), "preset": "veryfast"}
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self._count += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        if self._count == 0:
            self._tmp.unlink(missing_ok=True)
            raise VideoError(f"no frames were written to {self.path}")
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._container.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_overlay_video(path: str | Path, frames: Iterable[np.ndarray], masks: Iterable[Mapping[int, np.ndarray]],
                        fps: float, key_frame_idx: int | None = None,
                        boxes_xyxy: Mapping[int, Sequence[float]] | None = None,
                        points_xy: Mapping[int, Sequence[tuple[float, float, int]]] | None = None,
                        text: str | None = None, hold_key_frame: int = 0) -> Path:
    """Render an H.264 overlay video: per-frame object masks, and on the key frame the box and
    points that prompted them plus a highlighted border. ``hold_key_frame`` repeats the key frame
    that many extra times so a viewer can see it. Returns the path."""
    with VideoWriter(path, fps) as writer:
        for t, (frame, frame_masks) in enumerate(zip(frames, masks)):
            is_key = key_frame_idx is not None and t == key_frame_idx
            img = draw_overlay(frame, frame_masks, boxes_xyxy if is_key else None, points_xy if is_key else None,
                               is_key_frame=is_key, text=text)
            for _ in range(1 + (hold_key_frame if is_key else 0)):
                writer.write(img)
    return Path(path)


class CachedVideo(Video):
    """A view of another video that keeps decoded frames in an LRU cache of at most ``max_bytes``,
    so several passes over one video (HTFS rounds, reasoning, propagation, and every expression of
    the video in ``predict``) decode each frame once while memory stays bounded."""

    def __init__(self, video: Video, max_bytes: int = 2 << 30):
        from collections import OrderedDict

        self.inner = video
        self.path, self.fps, self.short_side = video.path, video.fps, video.short_side
        self.orig_height, self.orig_width = video.orig_height, video.orig_width
        self.max_bytes = int(max_bytes)
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def frame_names(self) -> list[str] | None:
        return getattr(self.inner, "frame_names", None)

    def timestamps(self) -> np.ndarray:
        return self.inner.timestamps()

    def get_frames(self, indices: Sequence[int]) -> list[np.ndarray]:
        idx = [self._check_index(int(i)) for i in indices]
        missing = sorted({i for i in idx if i not in self._cache})
        self.hits += len(idx) - len(missing)
        self.misses += len(missing)
        fresh = dict(zip(missing, self.inner.get_frames(missing))) if missing else {}
        out = []
        for i in idx:
            frame = fresh.get(i)
            if frame is None:
                frame = self._cache[i]
                self._cache.move_to_end(i)
            out.append(frame)
        for i, frame in fresh.items():
            self._cache[i] = frame
            self._bytes += frame.nbytes
        while self._bytes > self.max_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.nbytes
        return out

    def iter_frames(self, start: int = 0, stop: int | None = None, step: int = 1) -> Iterator[np.ndarray]:
        stop = len(self) if stop is None else stop
        indices = list(range(start, stop, step))
        for s in range(0, len(indices), 16):
            yield from self.get_frames(indices[s:s + 16])
