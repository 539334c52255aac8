"""Common reader interface of the benchmarks: videos, expressions, targets and ground-truth masks.

Every benchmark reader (``data/revos.py``, ``mevis.py``, ``refytvos.py``, ``refdavis.py``,
``reasonvos.py``, ``reasonseg.py``, ``synthetic_reader.py``) subclasses ``BenchmarkReader``; the
evaluator, the pipeline's ``predict`` and the training-sample builder use only the names below.
Readers are lazy: annotation json files are parsed on first use and masks are decoded per expression.
Layout and annotation problems raise ``DataRootError`` (a ``FileNotFoundError``) or ``DatasetError``
(a ``ValueError``) whose message names the file.

Names from annotation files are data, not paths. The public ``videos()``, ``frame_names()`` and
``expressions()`` here check every video id, frame name, expression id and object id once, whatever
the reader (``names.name_problem``): ``..``, absolute paths, backslashes, empty parts and control
characters are refused with a ``DatasetError`` naming the file and the entry; ``/`` between plain
parts is allowed only where the benchmark's own ids have it (``nested_video_ids``, ReVOS). Paths
built from names go through ``names.safe_join``, which refuses any that would leave its root.

Frame rates: frame folders carry none, so each reader gives its frames the rate its benchmark
publishes (``FRAME_RATE``; the sources are cited in each reader's docstring), or
``video.DEFAULT_FOLDER_FPS`` where none is published; ``fps=`` (``--fps``) overrides it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from videoseg_r1.masks import union
from videoseg_r1.names import UnsafePathError, name_problem, safe_join
from videoseg_r1.video import DEFAULT_FOLDER_FPS, IMAGE_EXTENSIONS, FrameFolderVideo, Video, natural_key


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
    #: frames per second of the benchmark's frame folders as published (None: not published)
    FRAME_RATE: float | None = None
    #: whether the benchmark's own video ids hold '/' between plain parts (ReVOS)
    nested_video_ids: bool = False

    def __init__(self, root: str | Path, split: str | None = None, fps: float | None = None):
        self.root = Path(root)
        self.split = split or self.default_split
        if not self.root.is_dir():
            raise DataRootError(f"data root not found: {self.root}")
        if fps is not None and not (float(fps) > 0):
            raise ValueError(f"--fps must be positive, got {fps}")
        self._fps = None if fps is None else float(fps)
        self._expr_cache: list[Expression] | None = None
        self._video_cache: list[str] | None = None
        self._frames_cache: dict[str, list[str]] = {}

    @property
    def frame_rate(self) -> float:
        """Frames per second given to the frames: ``fps=`` if set, else the published rate, else
        ``DEFAULT_FOLDER_FPS``."""
        return self._fps or self.FRAME_RATE or DEFAULT_FOLDER_FPS

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

    def _list_videos(self) -> list[str]:
        """The split's video ids in benchmark order (unchecked; ``videos()`` checks them)."""
        raise NotImplementedError

    def _all_expressions(self) -> list[Expression]:
        """Every expression (unchecked; ``expressions()`` checks their names)."""
        raise NotImplementedError

    def names_file(self) -> Path:
        """The file the names come from, for error messages."""
        return self.meta_path()

    def object_masks(self, expr: Expression) -> dict[Any, np.ndarray]:
        """{obj_id: (T, H, W) bool} for each target of the expression."""
        raise NotImplementedError

    def image_dir(self, video: str) -> Path:
        return self.join(self.root / "JPEGImages", video)

    def _listed_frames(self, video: str) -> list | None:
        """The video's frame names as the annotation file lists them, or None where it lists none
        (those are checked with the expressions, before any work starts)."""
        return None

    def _frame_names(self, video: str) -> list[str]:
        """Frame names of a video (unchecked): by default the stems of its frame folder's images."""
        d = require_dir(self.image_dir(video), f"frame folder of video {video!r}")
        names = [p.stem for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
        return sorted(names, key=natural_key)

    # -- names are data -------------------------------------------------------------
    def check_name(self, value: Any, what: str, entry: str = "", nested: bool = False) -> str:
        """``value`` as a string if it is a plain name, else a ``DatasetError`` naming the file and entry."""
        problem = name_problem(value, nested)
        if problem is not None:
            try:
                source = self.names_file()
            except (NotImplementedError, AttributeError):  # pragma: no cover - every reader names one
                source = self.root
            where = f" (entry {entry})" if entry else ""
            raise DatasetError(f"{source}: {what} {value!r}{where} has {problem}; names from annotation "
                               f"files are data, not paths, so it is refused")
        return str(value)

    def join(self, root: Path, *names: Any) -> Path:
        """``root / names...`` checked to stay inside ``root`` (``names.safe_join``), as a ``DatasetError``."""
        try:
            return safe_join(root, *names)
        except UnsafePathError as exc:
            raise DatasetError(f"{self.names_file()}: {exc}") from None

    # -- shared ---------------------------------------------------------------------
    def videos(self) -> list[str]:
        """The video ids of the split, in benchmark order, each checked to be a plain name."""
        if self._video_cache is None:
            self._video_cache = [self.check_name(v, "video id", nested=self.nested_video_ids)
                                 for v in self._list_videos()]
        return list(self._video_cache)

    def expressions(self, video: str | None = None) -> Iterator[Expression]:
        """Expressions in benchmark order (all, or those of one video); names checked once."""
        if self._expr_cache is None:
            exprs = self._all_expressions()
            for e in exprs:
                e.video = self.check_name(e.video, "video id", nested=self.nested_video_ids)
                e.exp_id = self.check_name(e.exp_id, "expression id", entry=f"video {e.video!r}")
                for obj in e.obj_ids:
                    self.check_name(obj, "object id", entry=e.key)
            for v in dict.fromkeys(e.video for e in exprs):
                if self._listed_frames(v) is not None:
                    self.frame_names(v)  # checks (and caches) the listed frame names
            self._expr_cache = exprs
        for e in self._expr_cache:
            if video is None or e.video == video:
                yield e

    def frame_names(self, video: str) -> list[str]:
        """Frame names (file stems) of a video in order, each checked to be a plain name."""
        names = self._frames_cache.get(video)
        if names is None:
            names = [self.check_name(f, "frame name", entry=f"video {video!r}") for f in self._frame_names(video)]
            if len(self._frames_cache) > 4096:
                self._frames_cache.clear()
            self._frames_cache[video] = names
        return list(names)

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
        return FrameFolderVideo(d, frame_names=[files[n] for n in names], fps=self.frame_rate)

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
