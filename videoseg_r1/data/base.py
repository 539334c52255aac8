"""Common reader interface of the benchmarks: videos, expressions, targets and ground-truth masks.

Every benchmark reader (``data/revos.py``, ``mevis.py``, ``refytvos.py``, ``refdavis.py``,
``reasonvos.py``, ``reasonseg.py``, ``synthetic_reader.py``) subclasses ``BenchmarkReader``; the
evaluator, the pipeline's ``predict`` and the training-sample builder use only the names below.
Readers are lazy: annotation json files are parsed on first use and masks are decoded per expression.
Layout and annotation problems raise ``DataRootError`` (a ``FileNotFoundError``) or ``DatasetError``
(a ``ValueError``) whose message names the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from videoseg_r1.masks import union
from videoseg_r1.video import IMAGE_EXTENSIONS, FrameFolderVideo, Video, natural_key


class DatasetError(ValueError):
    """A malformed annotation file or entry (the message names the file)."""


class DataRootError(FileNotFoundError):
    """The data root does not have the benchmark's layout (the message names the missing path)."""


@dataclass
class Expression:
    """One referring / reasoning query of a video.

    obj_ids: target object ids as the benchmark names them; anno_ids: ReVOS / MeViS annotation ids
    ([] where not applicable); type_id: ReVOS 0 referring / 1 reasoning / 2 (excluded), None elsewhere;
    extra: benchmark specifics (synthetic tier / difficulty / key_interval / target_frame, ReasonVOS
    source, Ref-DAVIS annotator, ...).
    """

    video: str
    exp_id: str
    text: str
    obj_ids: list = field(default_factory=list)
    anno_ids: list = field(default_factory=list)
    type_id: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``"<video>/<exp_id>"``, the expression's id in results and prediction folders."""
        return f"{self.video}/{self.exp_id}"


def load_json(path: Path, what: str = "annotation file") -> Any:
    """Read a json file; missing -> DataRootError, unparsable -> DatasetError, both naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataRootError(f"{what} not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"malformed {what} {path}: {exc}") from None


def require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataRootError(f"{what} not found: {path} (check --data-root and --split)")
    return path


class BenchmarkReader:
    """Base class. Subclasses set ``name`` and implement ``_load``, ``_video_meta`` helpers and
    ``object_masks``; the defaults here cover frame folders under ``JPEGImages``.

    Shapes: masks are bool (T, H, W) with T = ``len(frame_names(video))`` unless a reader documents
    otherwise (``eval_frames``).
    """

    name: str = "base"
    default_split: str = "valid"

    def __init__(self, root: str | Path, split: str | None = None):
        self.root = Path(root)
        self.split = split or self.default_split
        if not self.root.is_dir():
            raise DataRootError(f"data root not found: {self.root}")
        self._expr_cache: list[Expression] | None = None

    # -- to implement ---------------------------------------------------------------
    @property
    def has_ground_truth(self) -> bool:
        return True

    def meta_path(self) -> Path:
        raise NotImplementedError

    @property
    def meta(self) -> dict:
        """``{video: entry}`` of the meta-expressions file at ``meta_path()``, read once."""
        if getattr(self, "_meta", None) is None:
            data = load_json(self.meta_path(), f"{self.name} meta file")
            if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
                raise DatasetError(f"malformed {self.name} meta file {self.meta_path()}: expected {{\"videos\": {{...}}}}")
            self._meta = data["videos"]
        return self._meta

    def videos(self) -> list[str]:
        raise NotImplementedError

    def _all_expressions(self) -> list[Expression]:
        raise NotImplementedError

    def object_masks(self, expr: Expression) -> dict[Any, np.ndarray]:
        """{obj_id: (T, H, W) bool} for each target of the expression."""
        raise NotImplementedError

    def image_dir(self, video: str) -> Path:
        return self.root / "JPEGImages" / video

    # -- shared ---------------------------------------------------------------------
    def expressions(self, video: str | None = None) -> Iterator[Expression]:
        """Expressions in benchmark order (all, or those of one video)."""
        if self._expr_cache is None:
            self._expr_cache = self._all_expressions()
        for e in self._expr_cache:
            if video is None or e.video == video:
                yield e

    def frame_names(self, video: str) -> list[str]:
        """Frame names (file stems) of a video in order."""
        d = require_dir(self.image_dir(video), f"frame folder of video {video!r}")
        names = [p.stem for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
        return sorted(names, key=natural_key)

    def eval_frames(self, expr: Expression) -> list[str]:
        """Frames scored for an expression (by default every frame of its video)."""
        return self.frame_names(expr.video)

    def open_video(self, video: str) -> Video:
        """The video's frames as a ``FrameFolderVideo`` over its JPEGImages folder."""
        d = require_dir(self.image_dir(video), f"frame folder of video {video!r}")
        names = self.frame_names(video)
        files = {p.stem: p.name for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
        missing = [n for n in names if n not in files]
        if missing:
            raise DataRootError(f"frame {missing[0]!r} of video {video!r} not found in {d}")
        return FrameFolderVideo(d, frame_names=[files[n] for n in names])

    def frame_size(self, video: str) -> tuple[int, int]:
        """(H, W) of the video's frames."""
        import cv2

        d = require_dir(self.image_dir(video), f"frame folder of video {video!r}")
        names = self.frame_names(video)
        for p in d.iterdir():
            if p.stem == names[0] and p.suffix.lower() in IMAGE_EXTENSIONS:
                img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                if img is None:
                    raise DataRootError(f"cannot read frame {p}")
                return int(img.shape[0]), int(img.shape[1])
        raise DataRootError(f"no frames in {d}")

    def gt_masks(self, expr: Expression) -> np.ndarray:
        """Union of the expression's targets, (T, H, W) bool (no target -> all False)."""
        objs = self.object_masks(expr)
        if not objs:
            h, w = self.frame_size(expr.video)
            return np.zeros((len(self.eval_frames(expr)), h, w), dtype=bool)
        return union(objs.values())

    def instance_masks(self, expr: Expression) -> list[np.ndarray]:
        """The target masks one per listed annotation, repeats kept (what ReVOS's R adds up)."""
        return list(self.object_masks(expr).values())

    @property
    def has_robustness(self) -> bool:
        """Whether ``foreground_masks`` exists, so ReVOS's robustness R can be scored."""
        return False

    def foreground_masks(self, video: str) -> np.ndarray | None:
        """All annotated foreground of the video, (T, H, W) bool, where the benchmark has it."""
        return None

    def foreground_counts(self, video: str) -> np.ndarray | None:
        """(T,) annotated-foreground pixels per frame, where the benchmark has foreground masks."""
        fg = self.foreground_masks(video)
        return None if fg is None else np.count_nonzero(fg, axis=(1, 2)).astype(np.int64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r})"
