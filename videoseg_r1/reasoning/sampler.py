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
   inside [s, e], target excluded.

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

import math
import time
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


def _spread(candidates: Sequence[int], count: int) -> list[int]:
    """``count`` evenly spread members of ``candidates`` (sorted list)."""
    if count <= 0 or not candidates:
        return []
    if len(candidates) <= count:
        return list(candidates)
    picks = uniform_indices(0, len(candidates) - 1, count)
    return [candidates[i] for i in picks]


def reference_frame_indices(num_frames: int, segment: tuple[int, int], count: int,
                            exclude: Sequence[int] = ()) -> list[int]:
    """``count`` frames uniform over the video outside ``segment``; topped up from inside it."""
    s, e = segment
    outside = [i for i in range(num_frames) if (i < s or i > e) and i not in exclude]
    picks = _spread(outside, count)
    if len(picks) < count:
        inside = [i for i in range(s, e + 1) if i not in exclude and i not in picks]
        picks += _spread(inside, count - len(picks))
    return sorted(picks)


def _sample_dicts(out: GenerationOutput) -> list[dict[str, Any]]:
    return [{"text": s.text, "logprob": s.logprob, "num_tokens": s.num_tokens} for s in out.samples]


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
    def _ask(self, video, template: str, query: str, segment: tuple[int, int], num_samples: int,
             max_new_tokens: int, timestamps: np.ndarray) -> tuple[list[int], str, GenerationOutput]:
        c = self.config
        shown = uniform_indices(segment[0], segment[1], c.max_frames_shown)
        frames = video.get_frames(shown)
        ts = [float(timestamps[i]) for i in shown]
        text = render_template(template, query=query, num_frames=len(shown),
                               start_s=float(timestamps[segment[0]]), end_s=float(timestamps[segment[1]]))
        out = self.reasoner.generate(
            text, frames, as_video=c.as_video, timestamps_s=ts, frame_keys=shown,
            frame_size_hw=(c.frame_size, c.frame_size), num_samples=num_samples,
            do_sample=num_samples > 1 or c.temperature > 0, temperature=c.temperature,
            max_new_tokens=max_new_tokens)
        return shown, text, out

    # ---------------------------------------------------------------- HTFS
    def sample(self, video, query: str) -> SampledFrames:
        c = self.config
        num_frames = len(video)
        timestamps = np.asarray(video.timestamps(), dtype=np.float64)
        fallbacks: list[str] = []
        rounds: list[dict[str, Any]] = []
        segment = (0, num_frames - 1)
        stop_reason = "single_frame" if num_frames <= 1 else "max_rounds"
        for rnd in range(1 if num_frames > 1 else 0, c.max_rounds + 1 if num_frames > 1 else 0):
            t0 = time.perf_counter()
            shown, prompt, out = self._ask(video, "interval", query, segment, c.num_interval_samples,
                                           c.interval_max_new_tokens, timestamps)
            answers = _sample_dicts(out)
            valid_spans = []
            for ans, sample in zip(answers, out.samples):
                parsed = parse_interval(sample.text)
                ans["parsed"] = ({"start": parsed.start, "end": parsed.end, "unit": parsed.unit}
                                 if parsed.ok else None)
                span = parsed.to_frame_span(num_frames=num_frames, timestamps_s=timestamps) if parsed.ok else None
                error = parsed.error
                if parsed.ok and span is None:
                    error = "interval outside the video"
                elif span is not None:
                    lo, hi = max(span[0], segment[0]), min(span[1], segment[1])
                    if lo > hi:
                        error, span = f"interval frames {list(span)} outside segment {list(segment)}", None
                    else:
                        span = (lo, hi)
                ans["frame_span"] = list(span) if span else None
                ans["error"] = error
                if span:
                    valid_spans.append(span)
            record: dict[str, Any] = {"stage": "interval", "round": rnd, "segment": list(segment),
                                      "shown_frame_indices": shown, "prompt": out.prompt or prompt,
                                      "answers": answers, "fallback": None}
            if valid_spans:
                s = int(round(float(np.mean([v[0] for v in valid_spans]))))
                e = int(round(float(np.mean([v[1] for v in valid_spans]))))
                new_segment = (min(s, e), max(s, e))
            elif rnd == 1:
                new_segment = (0, num_frames - 1)
                record["fallback"] = FALLBACK_NO_INTERVAL_WHOLE_VIDEO
            else:
                new_segment = segment
                record["fallback"] = FALLBACK_NO_INTERVAL_KEEP_SEGMENT
            if record["fallback"]:
                fallbacks.append(f"{record['fallback']} (round {rnd})")
            segment = new_segment
            t_key = segment[1] - segment[0] + 1
            record.update(key_segment=list(segment), num_valid=len(valid_spans), t_key=t_key,
                          seconds=time.perf_counter() - t0, timing=vars(out.timing).copy())
            rounds.append(record)
            if record["fallback"]:
                stop_reason = "fallback"
                break
            if t_key <= c.delta * num_frames:
                stop_reason = "compressed"
                break
        if rounds:
            rounds[-1]["stop_reason"] = stop_reason

        # ---- target frame: relative position inside the key segment
        s, e = segment
        t_key = e - s + 1
        if num_frames > 1:
            t0 = time.perf_counter()
            shown, prompt, out = self._ask(video, "position", query, segment, c.num_position_samples,
                                           c.position_max_new_tokens, timestamps)
            answers = _sample_dicts(out)
            valid = []
            for i, (ans, sample) in enumerate(zip(answers, out.samples)):
                parsed = parse_position(sample.text)
                ans["parsed"] = parsed.value_norm
                ans["error"] = parsed.error
                if parsed.ok and math.isfinite(sample.logprob):
                    valid.append((sample.logprob, i, parsed.value_norm))
                elif parsed.ok:
                    ans["error"] = "non-finite log-likelihood"
            valid.sort(key=lambda v: (-v[0], v[1]))  # best log-likelihood first, stable
            top = valid[:c.top_m]
            record = {"stage": "position", "segment": list(segment), "shown_frame_indices": shown,
                      "prompt": out.prompt or prompt, "answers": answers,
                      "top_m_indices": [v[1] for v in top], "fallback": None}
            if top:
                p_mean = float(np.mean([v[2] for v in top]))
                target = min(max(s + int(math.floor(t_key * p_mean)), s), e)
                record["p_mean"] = p_mean
            else:
                target = (s + e) // 2
                record["fallback"] = FALLBACK_NO_POSITION_MIDDLE
                fallbacks.append(FALLBACK_NO_POSITION_MIDDLE)
            record.update(target_frame_idx=target, seconds=time.perf_counter() - t0,
                          timing=vars(out.timing).copy())
            rounds.append(record)
        else:
            target = 0

        key_frames = _spread([i for i in range(s, e + 1) if i != target], c.num_key_frames)
        references = reference_frame_indices(num_frames, segment, c.num_reference_frames,
                                             exclude=[target] + key_frames)
        return SampledFrames(num_frames=num_frames, key_segment=(s, e), target_frame_idx=target,
                             key_frame_indices=key_frames, reference_frame_indices=references,
                             fallbacks=fallbacks, rounds=rounds)


def sample_frames(video, query: str, reasoner: ReasonerBase, config: SamplerConfig | None = None) -> SampledFrames:
    """Run HTFS once: ``FrameSampler(reasoner, config).sample(video, query)``."""
    return FrameSampler(reasoner, config).sample(video, query)
