"""THE answer parser: every caller (HTFS, the reasoning step, rewards, evaluation) imports this file.

It turns model text into typed values and never raises on model text (malformed output yields a
result with ``ok == False`` and an ``error`` string, which the callers record in their trace).
It is tolerant about form (whitespace, ```json fences, single quotes, a bare dict instead of a
list, text after the answer) and strict about values (exactly 4 / 2 finite real numbers; booleans
and strings are not numbers; boxes reordered so x1 <= x2, y1 <= y2 and clipped to the frame).

API overview (all pure functions / frozen dataclasses)::

    >>> from videoseg_r1.reasoning.parsing import parse_answer, parse_interval, parse_position
    >>> ans = parse_answer("<think>the dog</think><answer>[{'bbox_2d': [30, 10, 5, 900],"
    ...                    " 'point_2d': [20, 50]}]</answer>", frame_size_wh=(840, 840))
    >>> ans.ok, ans.objects[0].box_xyxy, ans.objects[0].point_xy, ans.think
    (True, (5.0, 10.0, 30.0, 839.0), (20.0, 50.0), 'the dog')

    >>> split_think_answer("<think> a </think>\\n<answer>[]</answer>").strict_format
    True

    >>> parse_interval("The dog jumps from 3 to 8 seconds.")      # seconds
    ParsedInterval(start=3.0, end=8.0, unit='seconds', error=None)
    >>> parse_interval("frames 10 to 20").unit
    'frames'
    >>> parse_interval("00:03-00:08")
    ParsedInterval(start=3.0, end=8.0, unit='seconds', error=None)
    >>> parse_interval("2.5-7s").to_frame_span(fps=10, num_frames=300)
    (25, 70)

    >>> parse_position("<answer>40%</answer>").value_norm
    0.4

    >>> cmap = CoordinateMap(model_wh=(840, 840), original_wh=(1680, 420))
    >>> cmap.box_to_original((0, 0, 420, 420))
    (0.0, 0.0, 840.0, 210.0)
    >>> cmap.point_to_model((840.0, 210.0))
    (420.0, 420.0)

Conventions
-----------
* Coordinates are pixels, x right, y down. Boxes are inclusive ``(x1, y1, x2, y2)``; clipping keeps
  values in ``[0, W - 1] x [0, H - 1]``. A box that does not intersect the frame at all is rejected
  (clipping it would invent a box on the border); points are clipped.
* Model-space coordinates refer to the target frame as resized for the model
  (``MODEL_INPUT_SIZE`` x ``MODEL_INPUT_SIZE``, VisionReasoner's 840x840 by default, aspect ratio
  NOT kept); ``CoordinateMap`` maps to/from the original frame by per-axis scaling
  ``x_orig = x_model * W_orig / W_model``, then clips.
* Intervals are either ``'seconds'`` or ``'frames'`` (explicit words like "frame", "s", "sec",
  "seconds", or ``mm:ss`` timestamps decide; otherwise ``default_unit``).
* Relative positions are in [0, 1]; ``"40%"`` / ``"40 percent"`` are divided by 100. A bare number
  outside [0, 1] is rejected (it might be a frame index or seconds).
* ``split_think_answer(text).strict_format`` is the exact format check the think-format reward
  uses (the whole text is one ``<think>..</think>`` then one ``<answer>..</answer>``, only
  whitespace between); ``load_answer_json_strict`` is plain ``json.loads`` for the answer-format
  reward. Everything else here is the tolerant path used by inference.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass, replace
from typing import Any, Sequence

from videoseg_r1.config import MODEL_INPUT_SIZE

__all__ = [
    "ThinkAnswer",
    "ParsedObject",
    "ParsedAnswer",
    "ParsedInterval",
    "ParsedPosition",
    "CoordinateMap",
    "split_think_answer",
    "answer_region",
    "load_answer_json",
    "load_answer_json_strict",
    "parse_answer",
    "parse_box",
    "parse_point",
    "parse_interval",
    "parse_position",
    "clip_box",
    "clip_point",
]

DEFAULT_MODEL_WH = (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE)
BOX_KEY = "bbox_2d"
POINT_KEY = "point_2d"
NEG_POINT_KEY = "neg_point_2d"
MAX_TEXT_CHARS = 200_000  # longer model outputs are truncated before parsing (guards regex time)
MAX_SPAN_STARTS = 32  # bracket positions tried as JSON starts (bounds time on adversarial text)

Box = tuple[float, float, float, float]
Point = tuple[float, float]

# ============================================================== think / answer tags

_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)
_STRICT_RE = re.compile(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", re.S)


@dataclass(frozen=True)
class ThinkAnswer:
    """The ``<think>`` and ``<answer>`` parts of a completion.

    ``think`` / ``answer`` are the stripped contents (None when the opening tag is absent; an
    unclosed tag runs to the end of the text). ``strict_format`` is True only when the whole text
    (surrounding whitespace ignored) is exactly one think block followed by one answer block.
    """

    think: str | None
    answer: str | None
    has_think: bool
    has_answer: bool
    strict_format: bool


def split_think_answer(text: Any) -> ThinkAnswer:
    """Extract ``<think>``/``<answer>`` contents; never raises (non-str input -> all None)."""
    if not isinstance(text, str):
        return ThinkAnswer(None, None, False, False, False)
    text = text[:MAX_TEXT_CHARS]
    think_m = _THINK_RE.search(text)
    # The answer is searched after the think block so a quoted "<answer>" inside the reasoning
    # does not win over the real one.
    after = text[think_m.end():] if think_m else text
    answer_m = _ANSWER_RE.search(after) or _ANSWER_RE.search(text)
    strict = (
        _STRICT_RE.fullmatch(text.strip()) is not None
        and all(text.count(tag) == 1 for tag in ("<think>", "</think>", "<answer>", "</answer>"))
    )
    return ThinkAnswer(
        think=think_m.group(1).strip() if think_m else None,
        answer=answer_m.group(1).strip() if answer_m else None,
        has_think=think_m is not None,
        has_answer=answer_m is not None,
        strict_format=strict,
    )


def answer_region(text: Any) -> str:
    """The part of ``text`` that holds the answer.

    The ``<answer>`` content if present; otherwise the text with any ``<think>`` block removed;
    otherwise the whole text. Non-str -> "".
    """
    if not isinstance(text, str):
        return ""
    parts = split_think_answer(text)
    if parts.answer is not None:
        return parts.answer
    text = text[:MAX_TEXT_CHARS]
    stripped = re.sub(r"<think>.*?(</think>|$)", " ", text, flags=re.S).strip()
    return stripped if stripped else text.strip()


# ============================================================== JSON loading (tolerant)

_FENCE_RE = re.compile(r"```[a-zA-Z0-9_-]*\s*(.*?)\s*(?:```|$)", re.S)


def _balanced_spans(text: str) -> list[str]:
    """Top-level ``[...]`` / ``{...}`` substrings, brackets matched outside quoted strings."""
    spans: list[str] = []
    i, n = 0, len(text)
    starts_tried = 0
    while i < n and starts_tried < MAX_SPAN_STARTS:
        if text[i] not in "[{":
            i += 1
            continue
        starts_tried += 1
        stack: list[str] = []
        quote: str | None = None
        end = -1
        j = i
        while j < n:
            c = text[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote:
                    quote = None
            elif c in "\"'" and stack:
                quote = c
            elif c in "[{":
                stack.append("]" if c == "[" else "}")
            elif c in "]}":
                if stack.pop() != c:
                    break
                if not stack:
                    end = j
                    break
            j += 1
        if end >= 0:
            spans.append(text[i:end + 1])
            i = end + 1
        else:
            i += 1
    return spans


def _loads(candidate: str) -> tuple[Any, bool]:
    """Try JSON, then JSON with trailing commas removed, then a Python literal (single quotes)."""
    try:
        return json.loads(candidate), True
    except (ValueError, RecursionError):
        pass
    no_trailing = re.sub(r",\s*([\]}])", r"\1", candidate)
    try:
        return json.loads(no_trailing), True
    except (ValueError, RecursionError):
        pass
    try:  # ast.literal_eval evaluates literals only (no names, no calls): safe on model text
        with warnings.catch_warnings():  # e.g. "invalid decimal literal" on garbage text
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.literal_eval(no_trailing), True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None, False


def load_answer_json_strict(answer: Any) -> tuple[Any, str | None]:
    """Plain ``json.loads`` of the answer text (the answer-format reward's rule).

    Returns ``(value, None)`` or ``(None, error)``.
    """
    if not isinstance(answer, str):
        return None, "answer is not a string"
    try:
        return json.loads(answer), None
    except (ValueError, RecursionError) as exc:
        return None, f"invalid JSON: {exc}"


def load_answer_json(text: Any) -> tuple[Any, str | None]:
    """Tolerantly load the JSON value of an answer (or a whole completion).

    Looks in the answer region (see ``answer_region``), strips code fences, then tries the whole
    region and each top-level bracketed span in order; the first that loads wins.
    Returns ``(value, None)`` or ``(None, error)``.
    """
    region = answer_region(text)
    if not region:
        return None, "empty answer"
    fenced = _FENCE_RE.search(region)
    candidates = []
    if fenced:
        candidates.append(fenced.group(1))
    candidates.append(region)
    for base in list(candidates):
        candidates.extend(_balanced_spans(base))
    for cand in candidates:
        cand = cand.strip()
        if not cand or cand[0] not in "[{":
            continue
        value, ok = _loads(cand)
        if ok and isinstance(value, (list, dict, tuple)):
            return value, None
    return None, "no JSON list or object found in the answer"


# ============================================================== numbers, boxes, points


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _numbers(value: Any, count: int, name: str) -> tuple[tuple[float, ...] | None, str | None]:
    if not isinstance(value, (list, tuple)):
        return None, f"{name} is not a list"
    if len(value) != count:
        return None, f"{name} has {len(value)} values, expected {count}"
    if not all(_is_real(v) for v in value):
        return None, f"{name} has non-numeric or non-finite values"
    return tuple(float(v) for v in value), None


def clip_point(point_xy: Sequence[float], frame_size_wh: tuple[int, int]) -> Point:
    """Clip (x, y) into [0, W-1] x [0, H-1]."""
    w, h = frame_size_wh
    return (min(max(float(point_xy[0]), 0.0), w - 1.0), min(max(float(point_xy[1]), 0.0), h - 1.0))


def clip_box(box_xyxy: Sequence[float], frame_size_wh: tuple[int, int]) -> Box | None:
    """Reorder to x1<=x2, y1<=y2 and clip to the frame; None if it lies entirely outside."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    w, h = frame_size_wh
    if x2 < 0 or y2 < 0 or x1 > w - 1 or y1 > h - 1:
        return None
    (x1, y1), (x2, y2) = clip_point((x1, y1), frame_size_wh), clip_point((x2, y2), frame_size_wh)
    return (x1, y1, x2, y2)


def parse_box(value: Any, frame_size_wh: tuple[int, int] | None = DEFAULT_MODEL_WH
              ) -> tuple[Box | None, str | None]:
    """A ``bbox_2d`` value -> ``(box_xyxy, None)`` or ``(None, error)``; reordered, clipped."""
    nums, err = _numbers(value, 4, BOX_KEY)
    if nums is None:
        return None, err
    x1, y1, x2, y2 = nums
    box: Box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    if frame_size_wh is not None:
        clipped = clip_box(box, frame_size_wh)
        if clipped is None:
            return None, f"{BOX_KEY} {list(nums)} lies outside the {frame_size_wh[0]}x{frame_size_wh[1]} frame"
        box = clipped
    return box, None


def parse_point(value: Any, frame_size_wh: tuple[int, int] | None = DEFAULT_MODEL_WH,
                name: str = POINT_KEY) -> tuple[Point | None, str | None]:
    """A ``point_2d`` value -> ``(point_xy, None)`` or ``(None, error)``; clipped to the frame."""
    nums, err = _numbers(value, 2, name)
    if nums is None:
        return None, err
    point: Point = (nums[0], nums[1])
    if frame_size_wh is not None:
        point = clip_point(point, frame_size_wh)
    return point, None


# ============================================================== coordinate mapping


#: How a model family writes coordinates: Qwen2.5-VL in absolute pixels of its input frame;
#: Qwen2-VL and Qwen3-VL on a 0-1000 grid over the frame, whatever its size.
COORDINATE_CONVENTIONS = ("absolute", "normalized_1000")
_NORMALIZED_MODEL_TYPES = ("qwen2_vl", "qwen3_vl", "qwen3_vl_moe")
NORMALIZED_RANGE = 1000


def coordinate_convention(model_type: str | None, override: str = "auto") -> str:
    """``override`` unless "auto"; else the convention of ``model_type`` (absolute when unknown).

    >>> coordinate_convention("qwen2_5_vl"), coordinate_convention("qwen3_vl"), coordinate_convention("qwen3_vl", "absolute")
    ('absolute', 'normalized_1000', 'absolute')
    """
    if override != "auto":
        if override not in COORDINATE_CONVENTIONS:
            raise ValueError(f"coordinates must be 'auto' or one of {COORDINATE_CONVENTIONS}, got {override!r}")
        return override
    return "normalized_1000" if (model_type or "") in _NORMALIZED_MODEL_TYPES else "absolute"


def answer_space_wh(convention: str, model_wh: tuple[int, int]) -> tuple[int, int]:
    """The (W, H) the answer's numbers refer to: the model-input frame, or the 0-1000 grid."""
    return (NORMALIZED_RANGE, NORMALIZED_RANGE) if convention == "normalized_1000" else tuple(model_wh)


@dataclass(frozen=True)
class CoordinateMap:
    """Per-axis scaling between model-input pixels and original-frame pixels.

    ``model_wh`` is the (W, H) the frame was resized to for the model (default 840x840);
    ``original_wh`` the (W, H) of the original frame. Results are clipped to the target frame.
    """

    model_wh: tuple[int, int] = DEFAULT_MODEL_WH
    original_wh: tuple[int, int] = DEFAULT_MODEL_WH

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Original pixels per model pixel along x and y."""
        return self.original_wh[0] / self.model_wh[0], self.original_wh[1] / self.model_wh[1]

    def point_to_original(self, point_xy: Sequence[float]) -> Point:
        (mw, mh), (ow, oh) = self.model_wh, self.original_wh
        return clip_point((point_xy[0] * ow / mw, point_xy[1] * oh / mh), self.original_wh)

    def point_to_model(self, point_xy: Sequence[float]) -> Point:
        (mw, mh), (ow, oh) = self.model_wh, self.original_wh
        return clip_point((point_xy[0] * mw / ow, point_xy[1] * mh / oh), self.model_wh)

    def box_to_original(self, box_xyxy: Sequence[float]) -> Box:
        x1, y1 = self.point_to_original(box_xyxy[:2])
        x2, y2 = self.point_to_original(box_xyxy[2:])
        return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))

    def box_to_model(self, box_xyxy: Sequence[float]) -> Box:
        x1, y1 = self.point_to_model(box_xyxy[:2])
        x2, y2 = self.point_to_model(box_xyxy[2:])
        return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


# ============================================================== the reasoning answer


@dataclass(frozen=True)
class ParsedObject:
    """One answer item. Any field may be None when its value was missing or invalid.

    Coordinates are in the pixel space the answer was parsed in (model input unless mapped).
    ``errors`` lists what was wrong with this item (empty when all three fields are valid or the
    negative point was simply absent).
    """

    box_xyxy: Box | None = None
    point_xy: Point | None = None
    neg_point_xy: Point | None = None
    errors: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """True when SAM2 can be prompted (a box or a positive point)."""
        return self.box_xyxy is not None or self.point_xy is not None

    def to_original(self, cmap: CoordinateMap) -> "ParsedObject":
        """The same object with every coordinate mapped from model input to the original frame."""
        return replace(
            self,
            box_xyxy=cmap.box_to_original(self.box_xyxy) if self.box_xyxy else None,
            point_xy=cmap.point_to_original(self.point_xy) if self.point_xy else None,
            neg_point_xy=cmap.point_to_original(self.neg_point_xy) if self.neg_point_xy else None,
        )


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed reasoning completion.

    ``objects`` holds one entry per answer item that was a dict (usable or not); ``ok`` is True
    when the JSON loaded and at least one object is usable. An empty list ``[]`` is a valid answer
    meaning "no target" (``ok`` False, ``error`` None, ``json_ok`` True).
    """

    think: str | None
    answer: str | None
    objects: tuple[ParsedObject, ...]
    json_ok: bool
    strict_format: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.json_ok and any(o.usable for o in self.objects)

    @property
    def usable_objects(self) -> list[ParsedObject]:
        return [o for o in self.objects if o.usable]


def _parse_item(item: Any, frame_size_wh: tuple[int, int] | None) -> ParsedObject:
    if not isinstance(item, dict):
        return ParsedObject(errors=(f"item is a {type(item).__name__}, not an object",))
    errors: list[str] = []
    box = point = neg = None
    if BOX_KEY in item:
        box, err = parse_box(item[BOX_KEY], frame_size_wh)
        errors += [err] if err else []
    else:
        errors.append(f"missing {BOX_KEY}")
    if POINT_KEY in item:
        point, err = parse_point(item[POINT_KEY], frame_size_wh, POINT_KEY)
        errors += [err] if err else []
    else:
        errors.append(f"missing {POINT_KEY}")
    if item.get(NEG_POINT_KEY) is not None:  # optional: absence is not an error
        neg, err = parse_point(item[NEG_POINT_KEY], frame_size_wh, NEG_POINT_KEY)
        errors += [err] if err else []
    return ParsedObject(box, point, neg, tuple(errors))


def parse_answer(text: Any, frame_size_wh: tuple[int, int] | None = DEFAULT_MODEL_WH,
                 max_objects: int | None = None) -> ParsedAnswer:
    """Parse a reasoning completion into objects (boxes and points in ``frame_size_wh`` pixels).

    ``frame_size_wh=None`` disables clipping (boxes are still reordered). ``max_objects`` keeps
    the first N items. Never raises on any input.
    """
    parts = split_think_answer(text)
    value, err = load_answer_json(text)
    if value is None:
        return ParsedAnswer(parts.think, parts.answer, (), False, parts.strict_format, err)
    items = [value] if isinstance(value, dict) else list(value)
    if max_objects is not None:
        items = items[:max_objects]
    objects = tuple(_parse_item(it, frame_size_wh) for it in items)
    error = None
    if objects and not any(o.usable for o in objects):
        error = "no usable object: " + "; ".join(e for o in objects for e in o.errors)
    return ParsedAnswer(parts.think, parts.answer, objects, True, parts.strict_format, error)


# ============================================================== intervals

_NUM = r"\d+(?:\.\d+)?|\.\d+"
_TS = r"\d{1,2}:\d{1,2}(?::\d{1,2})?(?:\.\d+)?"
_VAL = rf"(?:{_TS}|{_NUM})"
_SEC_UNIT = r"(?:seconds?|secs?|s)\b"
_FRAME_WORD = r"\b(?:frames?|frame\s*(?:index|indices|idx|#)|fr)\b"
_SEP = r"(?:-|–|—|~|\bto\b|\buntil\b|\btill\b|\bthrough\b|\band\b|,)"
_RANGE_RE = re.compile(
    rf"(?P<pre>{_FRAME_WORD}\s*(?:from\s+)?)?(?P<a>{_VAL})\s*(?P<ua>{_SEC_UNIT}|{_FRAME_WORD})?\s*"
    rf"{_SEP}\s*(?:{_FRAME_WORD}\s*)?(?P<b>{_VAL})\s*(?P<ub>{_SEC_UNIT}|{_FRAME_WORD})?",
    re.I,
)
_BRACKET_RE = re.compile(rf"[\[(]\s*(?P<a>-?{_VAL})\s*[,;]\s*(?P<b>-?{_VAL})\s*[\])]")
_START_END_RE = re.compile(
    rf"start\w*(?:\s+(?:time|frame|second)s?)?\W{{0,20}}?(?P<a>-?{_VAL})\s*(?P<ua>{_SEC_UNIT}|{_FRAME_WORD})?.{{0,40}}?"
    rf"end\w*(?:\s+(?:time|frame|second)s?)?\W{{0,20}}?(?P<b>-?{_VAL})\s*(?P<ub>{_SEC_UNIT}|{_FRAME_WORD})?",
    re.I | re.S,
)


def _value_seconds(token: str) -> tuple[float, bool]:
    """Number or [hh:]mm:ss[.f] timestamp -> (value, is_timestamp)."""
    token = token.strip()
    if ":" in token:
        parts = [float(p) for p in token.lstrip("-").split(":")]
        total = 0.0
        for p in parts:
            total = total * 60 + p
        return (-total if token.startswith("-") else total), True
    return float(token), False


@dataclass(frozen=True)
class ParsedInterval:
    """A time interval answer. ``unit`` is ``'seconds'`` or ``'frames'``; start <= end.

    ``error`` is None for a valid interval; then ``start``/``end`` are finite, >= 0.
    """

    start: float | None = None
    end: float | None = None
    unit: str = "seconds"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.start is not None

    def to_frame_span(self, fps: float | None = None, num_frames: int | None = None,
                      timestamps_s: Sequence[float] | None = None,
                      shown_indices: Sequence[int] | None = None) -> tuple[int, int] | None:
        """Inclusive frame-index span, clamped to the video; None if invalid or out of range.

        Seconds map through ``timestamps_s`` (nearest frame, when given) or ``round(t * fps)``.
        Frames: with ``shown_indices`` (the video frames the model was shown, in order) a frame
        number counts the shown frames from 1 (0 is read as the first) and maps to its video index;
        without, it is a video frame index.

        >>> parse_interval("frames 3 to 5").to_frame_span(num_frames=100, shown_indices=[10, 20, 30, 40, 50])
        (30, 50)
        """
        if not self.ok:
            return None
        if self.unit == "frames" and shown_indices is not None:
            shown = [int(i) for i in shown_indices]
            a = max(int(math.floor(self.start)), 1)
            if not shown or a > len(shown):
                return None
            a, b = shown[a - 1], shown[min(max(int(math.ceil(self.end)), 1), len(shown)) - 1]
        elif self.unit == "frames":
            a, b = int(math.floor(self.start)), int(math.ceil(self.end))
        elif timestamps_s is not None and len(timestamps_s) > 0:
            a, b = _nearest_index(timestamps_s, self.start), _nearest_index(timestamps_s, self.end)
            if self.start > timestamps_s[-1] + _frame_step(timestamps_s):
                return None
        elif fps:
            a, b = int(round(self.start * fps)), int(round(self.end * fps))
        else:
            return None
        if num_frames is not None:
            if a > num_frames - 1:
                return None
            b = min(b, num_frames - 1)
        return (max(a, 0), max(b, 0))


def _frame_step(ts: Sequence[float]) -> float:
    return float(ts[-1] - ts[-2]) if len(ts) > 1 else 0.0


def _nearest_index(ts: Sequence[float], t: float) -> int:
    import bisect

    i = bisect.bisect_left(list(ts), t)
    if i <= 0:
        return 0
    if i >= len(ts):
        return len(ts) - 1
    return i if abs(ts[i] - t) < abs(t - ts[i - 1]) else i - 1


def _unit_of(match: re.Match, region: str, is_ts: bool, default_unit: str) -> str:
    words = " ".join(g or "" for g in (match.groupdict().get("pre"), match.groupdict().get("ua"),
                                       match.groupdict().get("ub")))
    if re.search(_FRAME_WORD, words, re.I):
        return "frames"
    if is_ts or re.search(_SEC_UNIT, words, re.I):
        return "seconds"
    context = region[max(0, match.start() - 30): match.end() + 30]
    has_frame = re.search(_FRAME_WORD, context, re.I) is not None
    has_sec = re.search(r"\b(?:seconds?|secs?)\b|\d\s*s\b", context, re.I) is not None
    if has_frame and not has_sec:
        return "frames"
    if has_sec and not has_frame:
        return "seconds"
    return default_unit


def parse_interval(text: Any, default_unit: str = "seconds") -> ParsedInterval:
    """Parse a time interval from model text (answer region only; think text ignored).

    Accepted forms include ``"2.5-7s"``, ``"from 3 to 8 seconds"``, ``"between 3s and 8s"``,
    ``"[12, 40]"``, ``"frames 10 to 20"``, ``"00:03-00:08"``, ``{"start": 3, "end": 8}``.
    Reversed bounds are swapped; negative or non-finite bounds are an error.
    """
    if default_unit not in ("seconds", "frames"):
        raise ValueError(f"default_unit must be 'seconds' or 'frames', got {default_unit!r}")
    region = answer_region(text)
    if not region:
        return ParsedInterval(error="empty answer", unit=default_unit)
    region = _FENCE_RE.sub(lambda m: m.group(1), region)
    for pattern in (_BRACKET_RE, _START_END_RE, _RANGE_RE):
        m = pattern.search(region)
        if not m:
            continue
        try:
            a, ts_a = _value_seconds(m.group("a"))
            b, ts_b = _value_seconds(m.group("b"))
        except ValueError:
            continue
        unit = _unit_of(m, region, ts_a or ts_b, default_unit)
        if not (math.isfinite(a) and math.isfinite(b)):
            return ParsedInterval(error=f"non-finite interval in {m.group(0)!r}", unit=unit)
        if a < 0 or b < 0:
            return ParsedInterval(error=f"negative interval bound in {m.group(0)!r}", unit=unit)
        return ParsedInterval(start=min(a, b), end=max(a, b), unit=unit)
    return ParsedInterval(error=f"no interval found in {region[:80]!r}", unit=default_unit)


# ============================================================== relative position

_PERCENT_RE = re.compile(rf"(?P<v>-?(?:{_NUM}))\s*(?:%|percent\b|per\s*cent\b)", re.I)
_FLOAT_RE = re.compile(rf"(?<![\w.])(?P<v>-?(?:{_NUM}))(?![\w%]|\.\d|\s*(?:%|percent|per\s*cent)\b)", re.I)


@dataclass(frozen=True)
class ParsedPosition:
    """A relative position answer ``value_norm`` in [0, 1] (None with ``error`` when invalid)."""

    value_norm: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.value_norm is not None


def parse_position(text: Any) -> ParsedPosition:
    """Parse a relative position: ``0.35``, ``"35%"``, ``"40 percent"``, ``{"position": 0.4}``.

    The first percentage, else the first number, in the answer region. Values outside [0, 1]
    (after the percent conversion) are an error, never clamped.
    """
    region = answer_region(text)
    if not region:
        return ParsedPosition(error="empty answer")
    region = _FENCE_RE.sub(lambda m: m.group(1), region)
    pct = _PERCENT_RE.search(region)
    flt = _FLOAT_RE.search(region)
    if pct and (not flt or pct.start() <= flt.start()):
        value = float(pct.group("v")) / 100.0
    elif flt:
        value = float(flt.group("v"))
    else:
        return ParsedPosition(error=f"no number found in {region[:80]!r}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return ParsedPosition(error=f"position {value} outside [0, 1]")
    return ParsedPosition(value_norm=value)
