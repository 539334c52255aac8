"""Typed values passed between the stages: prompts for SAM2, the sampler's frames, the trace.

Producers: ``reasoning`` (prompts, sampled frames), ``segmentation`` (masks), ``pipeline`` (trace).
Coordinates are pixels of the ORIGINAL frame unless a name says otherwise; boxes are inclusive
(x1, y1, x2, y2) with x1 <= x2, y1 <= y2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ObjectPrompt:
    """SAM2 prompt for one target object on the key frame (original-resolution pixels).

    ``points_xy`` and ``labels`` have equal length; label 1 = positive (inside), 0 = negative.
    ``box_xyxy`` is None when the model gave no usable box; ``error`` then says why (the object
    gets no mask and the trace records it).
    """

    obj_idx: int
    box_xyxy: tuple[float, float, float, float] | None = None
    points_xy: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.box_xyxy is not None or any(label == 1 for label in self.labels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SampledFrames:
    """What HTFS chose (all frame indices into the full video, 0-based).

    ``key_segment`` is inclusive [start, end]; ``target_frame_idx`` lies inside it. ``rounds``:
    HTFS's records (``reasoning.sampler.IntervalRound`` / ``PositionRound``), dicts in ``to_dict()``.
    """

    num_frames: int
    key_segment: tuple[int, int]
    target_frame_idx: int
    key_frame_indices: list[int]
    reference_frame_indices: list[int]
    fallbacks: list[str] = field(default_factory=list)
    rounds: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trace:
    """Everything a person needs to see why the pipeline produced its masks (written as JSON)."""

    video: str = ""
    query: str = ""
    num_frames: int = 0
    fps: float = 0.0
    seed: int | None = None  # the seed of the call's sampling steps
    sampler: dict[str, Any] = field(default_factory=dict)
    reasoning_text: str = ""
    reasoning_tokens: int = 0
    prompts: list[dict[str, Any]] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
