"""The reasoning step (SPEC.md §1 stage 2): HTFS frames + query -> per-object SAM2 prompts.

Called by the pipeline after ``sampler.py``. The reasoner sees the key-segment and reference
frames (as images at ``ReasonerConfig.context_frame_size``, with timestamps, in time order) and
last the target frame resized to ``model_input_size`` x ``model_input_size`` (840x840,
VisionReasoner's convention), and writes ``<think>..</think><answer>[{"bbox_2d", "point_2d",
"neg_point_2d"}, ..]</answer>``. The answer is parsed by THE parser (``parsing.parse_answer``)
in model-input pixels and mapped back to the ORIGINAL frame; each object becomes a
``types.ObjectPrompt`` (box, positive point label 1, negative point label 0). Malformed output
never raises: the object (or the whole answer) gets an ``error`` and no prompt.

    >>> res = reason(video, sampled, "the dog that jumps first", reasoner)   # doctest: +SKIP
    >>> [p.box_xyxy for p in res.prompts], res.reasoning_tokens              # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from videoseg_r1.config import ReasonerConfig
from videoseg_r1.reasoning.parsing import (
    CoordinateMap,
    ParsedAnswer,
    answer_space_wh,
    coordinate_convention,
    parse_answer,
)
from videoseg_r1.reasoning.reasoner import GenerationTiming, ReasonerBase, render_template
from videoseg_r1.types import ObjectPrompt, SampledFrames

# The answer example shown in the reasoning prompt (VisionReasoner's two-object example + neg points).
ANSWER_EXAMPLE = json.dumps([
    {"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110], "neg_point_2d": [5, 220]},
    {"bbox_2d": [225, 296, 706, 786], "point_2d": [302, 410], "neg_point_2d": [720, 500]},
])


@dataclass
class ReasoningResult:
    """Output of the reasoning step.

    ``prompts``: one ``ObjectPrompt`` per answer item, ORIGINAL-resolution pixels (unusable items
    keep their ``error``). ``parsed``: the answer in model-input pixels. ``reasoning_tokens``:
    tokens inside ``<think>``; ``num_tokens``: all generated tokens.
    """

    prompts: list[ObjectPrompt]
    text: str
    think: str | None
    reasoning_tokens: int
    num_tokens: int
    logprob: float
    parsed: ParsedAnswer
    prompt: str
    target_frame_idx: int
    shown_frame_indices: list[int]
    error: str | None = None
    timing: GenerationTiming = field(default_factory=GenerationTiming)

    def trace(self) -> dict[str, Any]:
        """JSON-able summary for ``types.Trace``."""
        return {"reasoning_text": self.text, "reasoning_tokens": self.reasoning_tokens,
                "num_tokens": self.num_tokens, "logprob": self.logprob, "error": self.error,
                "target_frame_idx": self.target_frame_idx,
                "shown_frame_indices": self.shown_frame_indices,
                "prompts": [p.to_dict() for p in self.prompts], "timing": vars(self.timing).copy()}


def reasoning_prompt(query: str, width: int, height: int, convention: str = "absolute") -> str:
    """The reasoning prompt for a ``width`` x ``height`` target frame, coordinates asked in the
    model family's convention (``parsing.coordinate_convention``); training samples use it too."""
    if convention == "normalized_1000":
        frame, coords = "coordinates from 0 to 1000 along each axis", "coordinates normalised to 0-1000 over the target frame"
    else:
        frame, coords = f"{width}x{height} pixels", "pixel coordinates of the target frame"
    return render_template("reasoning", query=query, frame_desc=frame, coord_desc=coords, answer_example=ANSWER_EXAMPLE)


def prompts_from_answer(parsed: ParsedAnswer, cmap: CoordinateMap) -> list[ObjectPrompt]:
    """ParsedAnswer (model pixels) -> ObjectPrompts (original pixels): box, pos (1), neg (0)."""
    prompts = []
    for idx, obj in enumerate(parsed.objects):
        mapped = obj.to_original(cmap)
        points, labels = [], []
        if mapped.point_xy is not None:
            points.append(mapped.point_xy)
            labels.append(1)
        if mapped.neg_point_xy is not None and mapped.usable:
            points.append(mapped.neg_point_xy)
            labels.append(0)
        error = None if mapped.usable else ("; ".join(obj.errors) or "no usable box or point")
        prompts.append(ObjectPrompt(obj_idx=idx, box_xyxy=mapped.box_xyxy if mapped.usable else None,
                                    points_xy=points if mapped.usable else [],
                                    labels=labels if mapped.usable else [], error=error))
    return prompts


def reason(video, sampled: SampledFrames, query: str, reasoner: ReasonerBase,
           config: ReasonerConfig | None = None, *, do_sample: bool | None = None,
           max_new_tokens: int | None = None) -> ReasoningResult:
    """Run the reasoning model on the sampled frames; greedy unless ``do_sample``/config says so."""
    cfg = config or reasoner.config
    size = int(cfg.model_input_size)
    target = sampled.target_frame_idx
    context = sorted(set(sampled.key_frame_indices) | set(sampled.reference_frame_indices)) \
        if cfg.use_context_frames else []
    context = [i for i in context if i != target]
    timestamps = video.timestamps()
    target_frame = video.get_frames([target])[0]
    height, width = target_frame.shape[:2]
    convention = coordinate_convention(getattr(reasoner, "model_type", ""), getattr(cfg, "coordinates", "auto"))
    text = reasoning_prompt(query, size, size, convention)
    # Context frames (context size) then the target (model input size), all as images in one call.
    frames = [_resize_square(f, cfg.context_frame_size) for f in video.get_frames(context)] if context else []
    frames.append(_resize_square(target_frame, size))
    shown = context + [target]
    out = reasoner.generate(
        text, frames, as_video=False, timestamps_s=[float(timestamps[i]) for i in shown],
        frame_keys=[("ctx", i, cfg.context_frame_size) for i in context] + [("target", target, size)],
        frame_size_hw=None, num_samples=1,
        do_sample=cfg.do_sample if do_sample is None else do_sample,
        temperature=cfg.temperature, top_p=cfg.top_p,
        max_new_tokens=max_new_tokens or cfg.max_new_tokens)
    sample = out.samples[0]
    answer_text = sample.text
    if (out.prompt or "").rstrip().endswith("<think>") and "<think>" not in answer_text:
        answer_text = "<think>" + answer_text  # a chat template that opens the think block itself
    space = answer_space_wh(convention, (size, size))
    parsed = parse_answer(answer_text, frame_size_wh=(space[0] + 1, space[1] + 1) if convention != "absolute" else space)
    cmap = CoordinateMap(model_wh=space, original_wh=(width, height))
    prompts = prompts_from_answer(parsed, cmap)
    think_tokens = reasoner.count_tokens(parsed.think) if parsed.think else 0
    error = parsed.error
    if parsed.json_ok and not parsed.objects:
        error = "empty answer list: no target"
    return ReasoningResult(prompts=prompts, text=sample.text, think=parsed.think,
                           reasoning_tokens=think_tokens, num_tokens=sample.num_tokens,
                           logprob=sample.logprob, parsed=parsed, prompt=out.prompt or text,
                           target_frame_idx=target, shown_frame_indices=shown, error=error,
                           timing=out.timing)


def _resize_square(frame, size: int):
    import cv2

    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    interp = cv2.INTER_AREA if size * size < frame.shape[0] * frame.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interp)
