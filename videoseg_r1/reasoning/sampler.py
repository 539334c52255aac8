"""Hierarchical Text-guided Frame Sampler (HTFS, SPEC.md §1 stage 1): which frames the reasoner sees.

Called by the pipeline before the reasoning step (``reason.py``); needs any ``ReasonerBase``
(the real ``Reasoner`` or a ``ScriptedReasoner``) and a ``videoseg_r1.video.Video``.

Algorithm (every number is a ``SamplerConfig`` field):

1. Show up to ``max_frames_shown`` frames of the current segment (uniform, with timestamps),
   ask for the interval where the target is best seen, ``num_interval_samples`` (K) answers in ONE
   batched call. Parse each (``parsing.parse_interval``), map to frame indices, intersect with the
   current segment; the valid ones are averaged into the key segment [s, e], T_key = e - s + 1.
2. Semantic compression: while T_key > ``delta`` * T, repeat 1 inside [s, e]; at most
   ``max_rounds`` interval rounds in total (the first one included).
3. Ask for the relative position p in [0, 1] of the target frame inside [s, e]
   (``num_position_samples`` answers, one call); keep the ``top_m`` valid answers with the highest
   sequence log-likelihood, average to p̄; target = s + floor(T_key * p̄), clamped to [s, e].
4. Reference frames: ``num_reference_frames`` uniform over the video outside [s, e] (topped up
   from inside the segment when the outside is too short). Key frames: ``num_key_frames`` uniform
   inside [s, e], target excluded (:func:`context_frame_indices`, which the training samples use too).

Time axis: each prompt shows a clip on its own clock, 0 s at its first frame (the prompt's
"from 0.00 s to ...", the timestamps, and the processor's video metadata agree:
:func:`clip_time_axis`); an interval answer in seconds is clip time and is shifted by the clip's
start, and an answer in frames counts the frames shown (from 1). Each round is recorded as an
:class:`IntervalRound` or :class:`PositionRound` in ``SampledFrames.rounds``.

Fallbacks are explicit and recorded in ``SampledFrames.fallbacks`` and in the round trace: no
valid interval in round 1 -> the whole video; in a later round -> the previous segment is kept;
no valid position -> the middle frame of the key segment.

    >>> from videoseg_r1.reasoning.reasoner import ScriptedReasoner
    >>> from videoseg_r1.video import ArrayVideo
    >>> import numpy as np
    >>> video = ArrayVideo([np.zeros((8, 8, 3), np.uint8)] * 100, fps=10)
    >>> r = ScriptedReasoner([["[2.0, 4.0]"], ["0.5"]])
    >>> sampled = sample_frames(video, "the dog", r)
    >>> sampled.key_segment, sampled.target_frame_idx
    ((20, 40), 30)
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from videoseg_r1.config import SamplerConfig
from videoseg_r1.reasoning.parsing import parse_interval, parse_position
from videoseg_r1.reasoning.reasoner import GenerationOutput, ReasonerBase, render_template
from videoseg_r1.types import SampledFrames

FALLBACK_NO_INTERVAL_WHOLE_VIDEO = "no_valid_interval:whole_video"
FALLBACK_NO_INTERVAL_KEEP_SEGMENT = "no_valid_interval:kept_previous_segment"
FALLBACK_NO_POSITION_MIDDLE = "no_valid_position:middle_frame"


def uniform_indices(start: int, end: int, count: int) -> list[int]:
    """Up to ``count`` distinct, sorted, evenly spaced integers in the inclusive range [start, end]."""
    if end < start or count <= 0:
        return []
    n = end - start + 1
    if n <= count:
        return list(range(start, end + 1))
    if count == 1:
        return [(start + end) // 2]
    return sorted({int(round(x)) for x in np.linspace(start, end, count)})


def spread(candidates: Sequence[int], count: int) -> list[int]:
    """``count`` evenly spread members of ``candidates`` (sorted, duplicates dropped; all if fewer).

    >>> spread(range(10), 3), spread([4, 1, 9], 5), spread(range(7), 1)
    ([0, 4, 9], [1, 4, 9], [3])
    """
    candidates = sorted({int(i) for i in candidates})
    if count <= 0 or not candidates:
        return []
    if len(candidates) <= count:
        return candidates
    return [candidates[i] for i in uniform_indices(0, len(candidates) - 1, count)]


def reference_frame_indices(num_frames: int, segment: tuple[int, int], count: int,
                            exclude: Sequence[int] = ()) -> list[int]:
    """``count`` frames uniform over the video outside ``segment``; topped up from inside it."""
    s, e = segment
    outside = [i for i in range(num_frames) if (i < s or i > e) and i not in exclude]
    picks = spread(outside, count)
    if len(picks) < count:
        inside = [i for i in range(s, e + 1) if i not in exclude and i not in picks]
        picks += spread(inside, count - len(picks))
    return sorted(picks)


def context_frame_indices(num_frames: int, segment: tuple[int, int], target: int, num_key: int,
                          num_reference: int) -> tuple[list[int], list[int]]:
    """The reasoning step's context frames: ``num_key`` key frames spread over ``segment`` (the target
    excluded) and ``num_reference`` reference frames (:func:`reference_frame_indices`). HTFS and the
    training samples both take them from here.

    >>> context_frame_indices(20, (5, 9), 7, 2, 3)
    ([5, 9], [0, 12, 19])
    """
    s, e = segment
    key = spread([i for i in range(s, e + 1) if i != target], num_key)
    return key, reference_frame_indices(num_frames, segment, num_reference, exclude=[target] + key)


def clip_time_axis(timestamps: Sequence[float], shown: Sequence[int]) -> tuple[float, list[float]]:
    """(start, times) of the clip of frames ``shown``: each time in seconds from the clip's first frame.

    The HTFS prompts speak of this axis (the clip runs from 0 s), as the processor's own clock
    does (Qwen2.5-VL's temporal positions, Qwen3-VL's timestamps start at the first frame shown);
    an answer in seconds is clip time, and ``start + t`` is video time. Training samples use it too.

    >>> clip_time_axis([i / 10 for i in range(100)], [20, 30, 40])
    (2.0, [0.0, 1.0, 2.0])
    """
    start = float(timestamps[shown[0]]) if len(shown) else 0.0
    return start, [round(float(timestamps[i]) - start, 6) for i in shown]


def htfs_prompt_text(task: str, query: str, clip_times: Sequence[float]) -> str:
    """The ``interval`` or ``position`` prompt of a clip whose frames sit at ``clip_times`` (from 0)."""
    return render_template(task, query=query, num_frames=len(clip_times), start_s=0.0,
                           end_s=float(clip_times[-1]) if len(clip_times) else 0.0)


@dataclass
class HTFSAnswer:
    """One sampled answer of an HTFS prompt and what became of it.

    ``parsed``: the interval ``{"start", "end", "unit"}`` as written (clip time) or the position in
    [0, 1]; ``frame_span``: the interval's video frames inside the segment; ``error``: why it was
    not used (None when it was).
    """

    text: str
    logprob: float
    num_tokens: int
    parsed: Any = None
    frame_span: list[int] | None = None
    error: str | None = None


@dataclass
class IntervalRound:
    """One interval round: the segment shown, the K answers, and the key segment they give."""

    round: int
    segment: list[int]
    shown_frame_indices: list[int]
    clip_start_s: float
    prompt: str
    answers: list[HTFSAnswer]
    key_segment: list[int]
    num_valid: int
    t_key: int
    fallback: str | None = None
    stop_reason: str | None = None
    seconds: float = 0.0
    timing: dict[str, Any] = field(default_factory=dict)
    stage: str = "interval"


@dataclass
class PositionRound:
    """The position round: M answers, the top-m by log-likelihood, and the target frame."""

    segment: list[int]
    shown_frame_indices: list[int]
    clip_start_s: float
    prompt: str
    answers: list[HTFSAnswer]
    top_m_indices: list[int]
    target_frame_idx: int
    p_mean: float | None = None
    fallback: str | None = None
    seconds: float = 0.0
    timing: dict[str, Any] = field(default_factory=dict)
    stage: str = "position"


class FrameSampler:
    """HTFS bound to a reasoner and a ``SamplerConfig``; ``sample(video, query)`` -> ``SampledFrames``."""

    def __init__(self, reasoner: ReasonerBase, config: SamplerConfig | None = None):
        self.reasoner = reasoner
        self.config = config or SamplerConfig()
        c = self.config
        if not 0 < c.delta <= 1:
            raise ValueError(f"SamplerConfig.delta must be in (0, 1], got {c.delta}")
        if c.max_rounds < 1 or c.num_interval_samples < 1 or c.num_position_samples < 1 or c.top_m < 1:
            raise ValueError("SamplerConfig: max_rounds, num_interval_samples, num_position_samples "
                             "and top_m must be >= 1")

    # ---------------------------------------------------------------- one model call
    def _ask(self, video, task: str, query: str, segment: tuple[int, int], num_samples: int,
             max_new_tokens: int, timestamps: np.ndarray) -> tuple[list[int], float, str, GenerationOutput]:
        """Show the segment's frames (clip time axis) and sample ``num_samples`` answers to ``task``."""
        c = self.config
        shown = uniform_indices(segment[0], segment[1], c.max_frames_shown)
        start, times = clip_time_axis(timestamps, shown)
        text = htfs_prompt_text(task, query, times)
        out = self.reasoner.generate(
            text, video.get_frames(shown), as_video=c.as_video, timestamps_s=times, frame_keys=shown,
            frame_size_hw=(c.frame_size, c.frame_size), num_samples=num_samples,
            do_sample=num_samples > 1 or c.temperature > 0, temperature=c.temperature,
            max_new_tokens=max_new_tokens)
        return shown, start, text, out

    # ---------------------------------------------------------------- HTFS steps
    def interval_round(self, video, query: str, segment: tuple[int, int], rnd: int,
                       timestamps: np.ndarray) -> IntervalRound:
        """Step 1: K interval answers on ``segment``; the valid ones averaged into the key segment."""
        c = self.config
        num_frames = len(timestamps)
        t0 = time.perf_counter()
        shown, start, prompt, out = self._ask(video, "interval", query, segment, c.num_interval_samples,
                                              c.interval_max_new_tokens, timestamps)
        answers, spans = [], []
        for sample in out.samples:
            answer = HTFSAnswer(sample.text, sample.logprob, sample.num_tokens)
            span, answer.error = self._interval_span(sample.text, answer, segment, shown, start, timestamps)
            answer.frame_span = list(span) if span else None
            if span:
                spans.append(span)
            answers.append(answer)
        fallback = None
        if spans:
            s = int(round(float(np.mean([v[0] for v in spans]))))
            e = int(round(float(np.mean([v[1] for v in spans]))))
            key = (min(s, e), max(s, e))
        elif rnd == 1:
            key, fallback = (0, num_frames - 1), FALLBACK_NO_INTERVAL_WHOLE_VIDEO
        else:
            key, fallback = segment, FALLBACK_NO_INTERVAL_KEEP_SEGMENT
        return IntervalRound(round=rnd, segment=list(segment), shown_frame_indices=shown, clip_start_s=start,
                             prompt=out.prompt or prompt, answers=answers, key_segment=list(key),
                             num_valid=len(spans), t_key=key[1] - key[0] + 1, fallback=fallback,
                             seconds=time.perf_counter() - t0, timing=vars(out.timing).copy())

    @staticmethod
    def _interval_span(text: str, answer: HTFSAnswer, segment: tuple[int, int], shown: list[int],
                       start: float, timestamps: np.ndarray) -> tuple[tuple[int, int] | None, str | None]:
        """An interval answer's video frames inside ``segment`` (or None) and the error, if any.

        Seconds are clip time (+ ``start`` gives video time); frame numbers count the frames shown.
        """
        parsed = parse_interval(text)
        if not parsed.ok:
            return None, parsed.error
        answer.parsed = {"start": parsed.start, "end": parsed.end, "unit": parsed.unit}
        if parsed.unit == "seconds":
            parsed = dataclasses.replace(parsed, start=parsed.start + start, end=parsed.end + start)
        span = parsed.to_frame_span(num_frames=len(timestamps), timestamps_s=timestamps, shown_indices=shown)
        if span is None:
            return None, "interval outside the video"
        lo, hi = max(span[0], segment[0]), min(span[1], segment[1])
        if lo > hi:
            return None, f"interval frames {list(span)} outside segment {list(segment)}"
        return (lo, hi), None

    def key_segment(self, video, query: str, timestamps: np.ndarray) -> tuple[tuple[int, int], list[IntervalRound]]:
        """Steps 1-2: interval rounds until the key segment is at most δ·T frames (or a fallback, or
        ``max_rounds``); the last round records why it stopped."""
        c = self.config
        num_frames = len(timestamps)
        segment, rounds = (0, num_frames - 1), []
        if num_frames <= 1:
            return segment, rounds
        stop_reason = "max_rounds"
        for rnd in range(1, c.max_rounds + 1):
            record = self.interval_round(video, query, segment, rnd, timestamps)
            rounds.append(record)
            segment = (record.key_segment[0], record.key_segment[1])
            if record.fallback:
                stop_reason = "fallback"
                break
            if record.t_key <= c.delta * num_frames:
                stop_reason = "compressed"
                break
        rounds[-1].stop_reason = stop_reason
        return segment, rounds

    def target_frame(self, video, query: str, segment: tuple[int, int], timestamps: np.ndarray) -> PositionRound:
        """Step 3: M position answers; the top-m by log-likelihood averaged into p̄;
        target = s + floor(T_key · p̄) (the middle frame when no answer is valid)."""
        c = self.config
        s, e = segment
        t_key = e - s + 1
        t0 = time.perf_counter()
        shown, start, prompt, out = self._ask(video, "position", query, segment, c.num_position_samples,
                                              c.position_max_new_tokens, timestamps)
        answers, valid = [], []
        for i, sample in enumerate(out.samples):
            parsed = parse_position(sample.text)
            answer = HTFSAnswer(sample.text, sample.logprob, sample.num_tokens, parsed=parsed.value_norm,
                                error=parsed.error)
            if parsed.ok and math.isfinite(sample.logprob):
                valid.append((sample.logprob, i, parsed.value_norm))
            elif parsed.ok:
                answer.error = "non-finite log-likelihood"
            answers.append(answer)
        valid.sort(key=lambda v: (-v[0], v[1]))  # best log-likelihood first, stable
        top = valid[:c.top_m]
        record = PositionRound(segment=list(segment), shown_frame_indices=shown, clip_start_s=start,
                               prompt=out.prompt or prompt, answers=answers, top_m_indices=[v[1] for v in top],
                               target_frame_idx=(s + e) // 2, timing=vars(out.timing).copy())
        if top:
            record.p_mean = float(np.mean([v[2] for v in top]))
            record.target_frame_idx = min(max(s + int(math.floor(t_key * record.p_mean)), s), e)
        else:
            record.fallback = FALLBACK_NO_POSITION_MIDDLE
        record.seconds = time.perf_counter() - t0
        return record

    def sample(self, video, query: str) -> SampledFrames:
        """Steps 1-4 on ``video``: key segment, target frame, key and reference frames."""
        c = self.config
        num_frames = len(video)
        timestamps = np.asarray(video.timestamps(), dtype=np.float64)
        segment, rounds = self.key_segment(video, query, timestamps)
        fallbacks = [f"{r.fallback} (round {r.round})" for r in rounds if r.fallback]
        target = 0
        if num_frames > 1:
            position = self.target_frame(video, query, segment, timestamps)
            rounds.append(position)
            target = position.target_frame_idx
            if position.fallback:
                fallbacks.append(position.fallback)
        key_frames, references = context_frame_indices(num_frames, segment, target, c.num_key_frames,
                                                       c.num_reference_frames)
        return SampledFrames(num_frames=num_frames, key_segment=segment, target_frame_idx=target,
                             key_frame_indices=key_frames, reference_frame_indices=references,
                             fallbacks=fallbacks, rounds=rounds)


def sample_frames(video, query: str, reasoner: ReasonerBase, config: SamplerConfig | None = None) -> SampledFrames:
    """Run HTFS once: ``FrameSampler(reasoner, config).sample(video, query)``."""
    return FrameSampler(reasoner, config).sample(video, query)
