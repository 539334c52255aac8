"""Task difficulty D in [1, 10] for the soft length penalty: an MLLM rater, a heuristic, a cache.

The paper rates every training sample offline with an MLLM on five 1–10 criteria (scene complexity,
segmentation challenge, temporal ambiguity, motion complexity, linguistic ambiguity) and averages
them into D. :class:`MLLMRater` does that with the reasoner and ``templates/difficulty.txt``;
:func:`heuristic_ratings` estimates the same five criteria from the annotations when no rater model
is available; synthetic samples carry their own D. :class:`DifficultyCache` stores D per sample in a
JSON file so ``videoseg-r1 rate-difficulty`` can resume and ``training.samples`` can read it.

Callers: ``videoseg_r1.training.difficulty_cli`` (``videoseg-r1 rate-difficulty``) and
``videoseg_r1.training.samples``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

#: The five criteria of the paper, in the order of the rater template.
DIFFICULTY_CRITERIA = (
    "scene_complexity",
    "segmentation_challenge",
    "temporal_ambiguity",
    "motion_complexity",
    "linguistic_ambiguity",
)
D_MIN, D_MAX = 1.0, 10.0

# ---------------------------------------------------------------- heuristic scales (ours; paper silent)
HEURISTIC_OBJECTS_FOR_MAX = 5  # >= 5 target objects -> scene complexity 10
HEURISTIC_AREA_EASY = 0.25  # mean mask area >= 25 % of the frame -> segmentation challenge 1
HEURISTIC_AREA_HARD = 0.001  # <= 0.1 % of the frame -> 10 (log-linear in between)
HEURISTIC_MOTION_FOR_MAX = 0.05  # centroid moving 5 % of the frame diagonal per frame -> motion 10
HEURISTIC_WORDS_EASY = 3  # query of <= 3 words -> linguistic ambiguity 1
HEURISTIC_WORDS_HARD = 20  # >= 20 words -> 10
HEURISTIC_REASONING_BONUS = 2.0  # reasoning-type expressions (ReVOS type 1) are harder to read
HEURISTIC_MAX_FRAMES = 64  # frames looked at per expression (uniformly subsampled)


def _clip_score(value: float) -> float:
    return float(min(D_MAX, max(D_MIN, value)))


def _lerp(fraction: float) -> float:
    """Map a fraction in [0, 1] (clipped) to a score in [1, 10]."""
    return _clip_score(D_MIN + (D_MAX - D_MIN) * min(1.0, max(0.0, fraction)))


def difficulty_from_ratings(ratings: Mapping[str, float]) -> float:
    """D = mean of the five criteria (each in [1, 10])."""
    return float(np.mean([float(ratings[name]) for name in DIFFICULTY_CRITERIA]))


# ============================================================================ rater answers


def parse_ratings(text: Any) -> dict[str, float] | None:
    """Five 1–10 ratings from a rater completion, or None when they cannot all be read.

    Accepts the template's JSON object (read by THE parser's tolerant loader, so fences and single
    quotes are fine), or a list of five numbers in the criteria order. Every value must be a finite
    number in [1, 10]; otherwise the answer is rejected rather than clamped.

    >>> parse_ratings('<think>busy street</think><answer>{"scene_complexity": 8, '
    ...   '"segmentation_challenge": 6, "temporal_ambiguity": 3, "motion_complexity": 5, '
    ...   '"linguistic_ambiguity": 3}</answer>')["scene_complexity"]
    8.0
    >>> parse_ratings("<answer>[2, 2, 2, 2, 12]</answer>") is None
    True
    """
    from videoseg_r1.reasoning.parsing import load_answer_json

    value, error = load_answer_json(text)
    if error or value is None:
        return None
    if isinstance(value, dict):
        lowered = {str(k).strip().lower().replace(" ", "_"): v for k, v in value.items()}
        if not all(name in lowered for name in DIFFICULTY_CRITERIA):
            return None
        raw = [lowered[name] for name in DIFFICULTY_CRITERIA]
    elif isinstance(value, (list, tuple)) and len(value) == len(DIFFICULTY_CRITERIA):
        raw = list(value)
    else:
        return None
    out = {}
    for name, v in zip(DIFFICULTY_CRITERIA, raw):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        if not D_MIN <= v <= D_MAX:
            return None
        out[name] = float(v)
    return out


# ============================================================================ heuristic


@dataclass
class AnnotationFeatures:
    """What the heuristic looks at, measured from the ground-truth masks of one expression.

    ``mean_area_norm``: mean target area / frame area over frames where a target is visible;
    ``absent_fraction``: fraction of frames with no target pixel; ``motion_norm``: mean per-frame
    displacement of each object's centroid / frame diagonal; ``query_words``: words in the query.
    """

    num_objects: int
    mean_area_norm: float
    absent_fraction: float
    motion_norm: float
    query_words: int
    reasoning: bool = False


def annotation_features(
    object_masks: Mapping[Any, np.ndarray],
    query: str,
    reasoning: bool = False,
    max_frames: int = HEURISTIC_MAX_FRAMES,
) -> AnnotationFeatures:
    """Measure :class:`AnnotationFeatures` from ``{obj_id: (T, H, W) bool}`` masks and the query."""
    masks = [np.asarray(m, dtype=bool) for m in object_masks.values()]
    words = len(str(query).split())
    if not masks or masks[0].ndim != 3 or masks[0].shape[0] == 0:
        return AnnotationFeatures(len(masks), 0.0, 1.0, 0.0, words, reasoning)
    t, h, w = masks[0].shape
    idx = np.unique(np.linspace(0, t - 1, num=min(t, max_frames)).round().astype(int))
    stack = np.stack([m[idx] for m in masks])  # (O, T', H, W)
    union = stack.any(axis=0)  # (T', H, W)
    visible = union.reshape(len(idx), -1).any(axis=1)
    area = union.reshape(len(idx), -1).sum(axis=1) / float(h * w)
    mean_area = float(area[visible].mean()) if visible.any() else 0.0
    diagonal = math.hypot(h, w)
    steps = []
    ys, xs = np.mgrid[0:h, 0:w]
    for obj in stack:  # (T', H, W)
        counts = obj.reshape(len(idx), -1).sum(axis=1)
        prev = None
        for k in range(len(idx)):
            if counts[k] == 0:
                prev = None
                continue
            centre = np.array([(xs * obj[k]).sum(), (ys * obj[k]).sum()]) / counts[k]
            if prev is not None:
                gap = max(1, int(idx[k] - prev[0]))
                steps.append(float(np.hypot(*(centre - prev[1]))) / gap / diagonal)
            prev = (idx[k], centre)
    motion = float(np.mean(steps)) if steps else 0.0
    return AnnotationFeatures(len(masks), mean_area, float(1.0 - visible.mean()), motion, words, reasoning)


def heuristic_ratings(features: AnnotationFeatures) -> dict[str, float]:
    """The five criteria estimated from annotations (each in [1, 10]; documented, not learned).

    * scene complexity: number of target objects, 1 object -> 1, ``HEURISTIC_OBJECTS_FOR_MAX`` -> 10;
    * segmentation challenge: mean target area, log-linear from ``HEURISTIC_AREA_EASY`` (1) down to
      ``HEURISTIC_AREA_HARD`` (10) — small objects are hard;
    * temporal ambiguity: 1 + 9 × fraction of frames where the target is absent;
    * motion complexity: centroid speed, linear up to ``HEURISTIC_MOTION_FOR_MAX`` of the diagonal
      per frame (10);
    * linguistic ambiguity: query length, linear from ``HEURISTIC_WORDS_EASY`` (1) to
      ``HEURISTIC_WORDS_HARD`` words (10), + ``HEURISTIC_REASONING_BONUS`` for reasoning queries.

    >>> r = heuristic_ratings(AnnotationFeatures(1, 0.25, 0.0, 0.0, 3))
    >>> round(difficulty_from_ratings(r), 2)
    1.0
    """
    scene = _lerp((features.num_objects - 1) / max(1, HEURISTIC_OBJECTS_FOR_MAX - 1))
    if features.mean_area_norm <= 0:
        seg = D_MAX
    else:
        span = math.log10(HEURISTIC_AREA_EASY) - math.log10(HEURISTIC_AREA_HARD)
        seg = _lerp((math.log10(HEURISTIC_AREA_EASY) - math.log10(features.mean_area_norm)) / span)
    temporal = _lerp(features.absent_fraction)
    motion = _lerp(features.motion_norm / HEURISTIC_MOTION_FOR_MAX)
    ling = _lerp((features.query_words - HEURISTIC_WORDS_EASY) / (HEURISTIC_WORDS_HARD - HEURISTIC_WORDS_EASY))
    if features.reasoning:
        ling = _clip_score(ling + HEURISTIC_REASONING_BONUS)
    return dict(zip(DIFFICULTY_CRITERIA, (scene, seg, temporal, motion, ling)))


def heuristic_difficulty(object_masks: Mapping[Any, np.ndarray], query: str, reasoning: bool = False) -> float:
    """D from the annotations alone (mean of :func:`heuristic_ratings`)."""
    return difficulty_from_ratings(heuristic_ratings(annotation_features(object_masks, query, reasoning)))


# ============================================================================ MLLM rater


def load_difficulty_template() -> str:
    """The rater prompt (``videoseg_r1/reasoning/templates/difficulty.txt``; ``{query}`` placeholder)."""
    from videoseg_r1.reasoning.reasoner import load_template

    return load_template("difficulty")


@dataclass
class RaterResult:
    """One rating: D, the five criteria (None when every attempt failed), the raw answers."""

    difficulty: float | None
    ratings: dict[str, float] | None
    raw: list[str] = field(default_factory=list)


class MLLMRater:
    """The paper's offline difficulty rater: frames + query -> five ratings -> D.

    ``generate`` is any callable ``(frames, prompt, num_samples, timestamps_s) -> list[str]``;
    :meth:`from_reasoner` adapts ``videoseg_r1.reasoning.reasoner.Reasoner`` (the frames are shown
    as one video with their timestamps, as HTFS shows them). ``num_samples`` answers are drawn and
    the valid ones averaged per criterion (one MLLM answer is noisy). No valid answer ->
    ``difficulty`` None (the caller falls back to the heuristic and records that).
    """

    def __init__(self, generate, num_samples: int = 1, template: str | None = None):
        self.generate = generate
        self.num_samples = max(1, int(num_samples))
        self.template = template if template is not None else load_difficulty_template()

    @classmethod
    def from_reasoner(cls, reasoner, num_samples: int = 1, max_new_tokens: int = 256,
                      frame_size: int | None = None, **kw) -> "MLLMRater":
        """Wrap a ``Reasoner`` (or ``ScriptedReasoner``); sampling when ``num_samples`` > 1."""

        def generate(frames, prompt, n, timestamps_s=None):
            size_hw = (frame_size, frame_size) if frame_size else None
            out = reasoner.generate(prompt, list(frames), as_video=True, timestamps_s=timestamps_s,
                                    frame_size_hw=size_hw, num_samples=n, do_sample=n > 1,
                                    max_new_tokens=max_new_tokens)
            return list(out.texts)

        return cls(generate, num_samples=num_samples, **kw)

    def prompt(self, query: str) -> str:
        from videoseg_r1.reasoning.reasoner import render_template

        return render_template(self.template, query=str(query))

    def rate(self, frames: Sequence[Any], query: str, timestamps_s: Sequence[float] | None = None) -> RaterResult:
        texts = list(self.generate(list(frames), self.prompt(query), self.num_samples, timestamps_s))
        parsed = [r for r in (parse_ratings(t) for t in texts) if r is not None]
        if not parsed:
            return RaterResult(None, None, texts)
        ratings = {name: float(np.mean([p[name] for p in parsed])) for name in DIFFICULTY_CRITERIA}
        return RaterResult(difficulty_from_ratings(ratings), ratings, texts)


# ============================================================================ cache


@dataclass
class DifficultyRecord:
    """One cached rating. ``source``: 'mllm', 'heuristic', 'synthetic' or 'heuristic_fallback'."""

    difficulty: float
    source: str
    ratings: dict[str, float] | None = None
    raw: list[str] | None = None


def sample_key(benchmark: str, video: str, exp_id: Any) -> str:
    """Cache key of one expression: ``benchmark/video/exp_id``."""
    return f"{benchmark}/{video}/{exp_id}"


class DifficultyCache:
    """D per sample in one JSON file ``{"version": 1, "records": {key: DifficultyRecord}}``.

    Writes are atomic (temporary file + rename), so an interrupted ``rate-difficulty`` run keeps every
    rating finished so far and resumes from it.
    """

    VERSION = 1

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.records: dict[str, DifficultyRecord] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                for key, rec in data.get("records", {}).items():
                    self.records[key] = DifficultyRecord(**rec)
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(
                    f"difficulty cache {self.path} is not a valid cache file ({exc}); "
                    "delete it or pass another --output"
                ) from None

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> float | None:
        rec = self.records.get(key)
        return None if rec is None else float(rec.difficulty)

    def put(self, key: str, record: DifficultyRecord) -> None:
        self.records[key] = record

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": self.VERSION, "records": {k: asdict(v) for k, v in sorted(self.records.items())}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(payload, fh, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def expression_difficulty(
    reader,
    expr,
    benchmark: str,
    cache: DifficultyCache | None = None,
    rater: MLLMRater | None = None,
    frames_for_rater=None,
    object_masks: Mapping[Any, np.ndarray] | None = None,
) -> DifficultyRecord:
    """D of one expression, by priority: cache, the sample's own D (synthetic), the MLLM rater,
    the heuristic. ``frames_for_rater()`` returns ``(frames, timestamps_s)`` the rater sees (only
    called when the rater is used).
    """
    key = sample_key(benchmark, expr.video, expr.exp_id)
    if cache is not None and key in cache:
        return cache.records[key]
    extra = getattr(expr, "extra", None) or {}
    if extra.get("difficulty") is not None:
        record = DifficultyRecord(float(extra["difficulty"]), "synthetic")
    else:
        record = None
        raw = None
        if rater is not None:
            frames, timestamps = frames_for_rater() if frames_for_rater else ([], None)
            result = rater.rate(frames, expr.text, timestamps)
            raw = result.raw
            if result.difficulty is not None:
                record = DifficultyRecord(result.difficulty, "mllm", result.ratings, result.raw)
        if record is None:
            ratings = heuristic_ratings(
                annotation_features(object_masks if object_masks is not None else reader.object_masks(expr), expr.text, getattr(expr, "type_id", 0) == 1)
            )
            source = "heuristic" if rater is None else "heuristic_fallback"
            record = DifficultyRecord(difficulty_from_ratings(ratings), source, ratings, raw)
    if cache is not None:
        cache.put(key, record)
    return record
