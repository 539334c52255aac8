"""Training samples for GRPO and SFT: frames, prompt, ground truth and difficulty per expression.

For each expression of a benchmark reader (``videoseg_r1.data.registry.get_reader``; ReVOS, MeViS,
Ref-YouTube-VOS, Ref-DAVIS17 or the synthetic benchmark) this module

1. picks the **target frame** among the frames where the targets are visible
   (``SampleConfig.target_frame_rule``; frames where *all* targets are visible are preferred);
2. picks the **key-segment and reference frames** the way HTFS shows them at inference: a key
   segment around the target frame (the synthetic benchmark's own ``key_interval`` when it has one,
   else the visible run around the target, at most δ·T long), ``num_key_frames`` frames inside it
   and ``num_reference_frames`` frames spread over the rest of the video; the images are the context
   frames in time order followed by the target frame, each after its timestamp, at the sizes and
   with the prompt text the inference step (``reasoning.reason``) uses;
3. builds the **ground truth per object** on the target frame resized to the model input
   (``model_input_size``, 840x840 by default, aspect ratio not kept): box = tight inclusive bounds of
   the mask, point = the mask pixel farthest from the mask border (Euclidean distance transform),
   negative point = the pixel nearest to that point among those 5–20 px (L1) outside all targets;
4. attaches the difficulty D (cache file, the sample's own D, or the annotation heuristic);
5. optionally (``SampleConfig.tasks``) adds the two **HTFS** samples of the same expression, laid out
   exactly as ``reasoning.sampler`` asks them with ``as_video=False`` (frames as images, each after
   its timestamp): ``interval`` (frames of the whole video, and of a random segment enclosing the key
   segment; answer ``<answer>[start_s, end_s]</answer>`` of the key segment) and ``position``
   (frames of the key segment; answer ``<answer>p</answer>`` with
   ``s + floor(T_key * p) = target frame``). They carry their SFT target in the ``answer`` column;
   GRPO trains on ``reasoning`` samples only (its rewards score that answer).

Expressions are independent (each has its own seeded random generator), so ``build_dataset`` can
build them in ``workers`` processes with the same result.

:func:`build_dataset` returns a ``datasets.Dataset`` whose columns are listed in ``COLUMNS``; the
rewards read ``solution``, ``gt_mask_rle``, ``frame_size`` and ``difficulty``, the trainers read
``prompt`` and ``images``. Called by ``videoseg_r1.training.grpo`` / ``sft`` and the CLI.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from videoseg_r1.config import (
    HTFS_DELTA,
    HTFS_FRAME_SIZE,
    HTFS_MAX_FRAMES_SHOWN,
    HTFS_NUM_REFERENCE_FRAMES,
    MODEL_INPUT_SIZE,
    REASONING_CONTEXT_FRAME_SIZE,
    REWARD_THRESHOLD_REFERENCE_PX,
)

# ---------------------------------------------------------------- defaults (ours; paper silent)
SAMPLE_NUM_KEY_FRAMES = 4  # key-segment frames shown besides the target frame
SAMPLE_MIN_AREA_PX = 16  # a target counts as visible on a frame with at least this many pixels
NEG_POINT_MIN_L1_PX = 5  # negative-point target: 5..20 px (taxicab) outside every target mask at an
NEG_POINT_MAX_L1_PX = 20  # 840 px input, well inside the reward's (0, 40] window; both scale with the
# frame as the reward's thresholds do (neg_point_ring_px)
TARGET_FRAME_RULES = ("largest", "random", "middle", "first", "given")
DATASET_CHUNK_ROWS = 1000  # rows per Arrow table when building (keeps each well under 2 GiB)
TASKS = ("reasoning", "interval", "position")  # the prompts a sample can teach (see the module docstring)

#: Columns of the dataset, in order, with their meaning.
COLUMNS = {
    "prompt": "conversational prompt: one user message, 'Frame at t s:' + image slot per image, then the text",
    "images": "PIL images: context frames in time order, then the target frame (model input size)",
    "solution": 'JSON list [{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}] in model-input pixels',
    "neg_points": "JSON list of [x, y] (or null) per object: negative-point targets for SFT answers",
    "gt_mask_rle": "COCO RLE (JSON) of the union of the target masks at model-input size",
    "frame_size": "[W, H] of the model-input target frame",
    "difficulty": "D in [1, 10]",
    "difficulty_source": "'cache:<source>', 'synthetic' or 'heuristic'",
    "benchmark": "benchmark name",
    "video": "video name",
    "exp_id": "expression id (string)",
    "query": "the expression text",
    "num_frames": "frames in the video",
    "target_frame_idx": "index of the target frame in the video",
    "frame_indices": "video indices of all images, in the order of `images`",
    "task": "'reasoning', 'interval' or 'position' (which prompt the sample teaches)",
    "answer": "SFT target text of 'interval'/'position' samples (empty for 'reasoning': built from solution)",
}


@dataclass
class SampleConfig:
    """How samples are built (see the module docstring)."""

    model_input_size: int = MODEL_INPUT_SIZE
    context_frame_size: int = REASONING_CONTEXT_FRAME_SIZE  # as at inference
    num_key_frames: int = SAMPLE_NUM_KEY_FRAMES
    num_reference_frames: int = HTFS_NUM_REFERENCE_FRAMES
    key_segment_fraction: float = HTFS_DELTA
    target_frame_rule: str = "given"
    min_area_px: int = SAMPLE_MIN_AREA_PX
    neg_point_min_l1_px: int = NEG_POINT_MIN_L1_PX
    neg_point_max_l1_px: int = NEG_POINT_MAX_L1_PX
    samples_per_expression: int = 1
    max_samples: int | None = None
    seed: int = 0
    split: str = "train"
    difficulty_file: str | None = None
    extra_columns: dict[str, Any] = field(default_factory=dict)
    tasks: Sequence[str] = ("reasoning",)  # add "interval"/"position" to teach the HTFS prompts (SFT)
    htfs_frame_size: int = HTFS_FRAME_SIZE  # = SamplerConfig.frame_size at inference
    htfs_max_frames_shown: int = HTFS_MAX_FRAMES_SHOWN  # = SamplerConfig.max_frames_shown

    def __post_init__(self):
        self.tasks = tuple(self.tasks)
        if not self.tasks or set(self.tasks) - set(TASKS):
            raise ValueError(f"tasks {list(self.tasks)!r}: choose among {TASKS}")
        if self.target_frame_rule not in TARGET_FRAME_RULES:
            raise ValueError(f"target_frame_rule {self.target_frame_rule!r}: choose one of {TARGET_FRAME_RULES}")
        from videoseg_r1.config import check_vision_grid_size

        # the solution's coordinates are in this size: it must be one the processor keeps
        self.model_input_size = check_vision_grid_size("model_input_size", self.model_input_size)
        if self.context_frame_size < 28:
            raise ValueError("context_frame_size must be at least 28 pixels")


# ============================================================================ geometry of one object


def resize_mask(mask: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool (H, W) mask to ``size_wh`` = (W, H)."""
    import cv2

    mask = np.asarray(mask, dtype=np.uint8)
    if (mask.shape[1], mask.shape[0]) == tuple(size_wh):
        return mask.astype(bool)
    return cv2.resize(mask, tuple(int(v) for v in size_wh), interpolation=cv2.INTER_NEAREST).astype(bool)


def mask_box_xyxy(mask: np.ndarray) -> list[int] | None:
    """Tight inclusive bounds ``[x1, y1, x2, y2]`` of a bool (H, W) mask; None if empty.

    >>> m = np.zeros((5, 6), bool); m[1:3, 2:5] = True
    >>> mask_box_xyxy(m)
    [2, 1, 4, 2]
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def mask_centre_point(mask: np.ndarray) -> list[int] | None:
    """The mask pixel farthest from the mask border (Euclidean distance transform), as ``[x, y]``.

    The frame edge counts as border (the mask is padded with background). Among tied pixels (the
    ridge of an elongated shape) the one nearest to their mean is taken, so a rectangle gets its
    middle. None if the mask is empty.

    >>> m = np.zeros((7, 9), bool); m[1:6, 1:8] = True
    >>> mask_centre_point(m)
    [4, 3]
    """
    from scipy.ndimage import distance_transform_edt

    mask = np.asarray(mask, dtype=bool)
    box = mask_box_xyxy(mask)
    if box is None:
        return None
    # the transform of the box padded by one background pixel equals the whole frame's inside the box:
    # from a mask pixel, the ring pixel straight across is nearer than any background pixel beyond it
    x1, y1, x2, y2 = box
    dist = distance_transform_edt(np.pad(mask[y1:y2 + 1, x1:x2 + 1], 1))[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= dist.max() - 1e-9)
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return [int(xs[k]) + x1, int(ys[k]) + y1]


def negative_point_target(
    union_mask: np.ndarray,
    near_xy: Sequence[float],
    min_l1_px: int = NEG_POINT_MIN_L1_PX,
    max_l1_px: int = NEG_POINT_MAX_L1_PX,
) -> list[int] | None:
    """A pixel ``min_l1_px..max_l1_px`` (taxicab) outside every target, nearest to ``near_xy``.

    ``union_mask`` is the union of all target masks (H, W); ``near_xy`` is usually the object's
    centre point, so the negative point sits just outside *that* object. None when no pixel of the
    frame is in that ring (a target covering the whole frame).
    """
    from scipy.ndimage import distance_transform_cdt

    union_mask = np.asarray(union_mask, dtype=bool)
    box = mask_box_xyxy(union_mask)
    if box is None:
        return None
    # every pixel within max_l1_px of the union lies in its box grown by that much, and a taxicab
    # distance inside that crop is the whole frame's (a shortest path stays in the two pixels' box)
    h, w = union_mask.shape
    m = int(max_l1_px) + 1
    x0, y0 = max(0, box[0] - m), max(0, box[1] - m)
    crop = union_mask[y0:min(h, box[3] + m + 1), x0:min(w, box[2] + m + 1)]
    dist = distance_transform_cdt(~crop, metric="taxicab")
    ring = (dist >= min_l1_px) & (dist <= max_l1_px)
    if not ring.any():  # (a union covering almost the whole frame) any background pixel
        dist, x0, y0 = distance_transform_cdt(~union_mask, metric="taxicab"), 0, 0
        ring = dist > 0
        if not ring.any():
            return None
    ys, xs = np.nonzero(ring)
    xs, ys = xs + x0, ys + y0
    d2 = (xs - float(near_xy[0])) ** 2 + (ys - float(near_xy[1])) ** 2
    k = int(np.argmin(d2))
    return [int(xs[k]), int(ys[k])]


@dataclass
class ObjectTarget:
    """Ground truth of one object on the model-input target frame (inclusive pixel coordinates)."""

    obj_id: Any
    box_xyxy: list[int]
    point_xy: list[int]
    neg_point_xy: list[int] | None


def neg_point_ring_px(size_wh: tuple[int, int], config: SampleConfig | None = None) -> tuple[int, int]:
    """The taxicab ring (min, max) of negative-point targets on a ``size_wh`` model-input frame.

    The configured 5..20 px are for an 840 px input and scale by sqrt(W*H) / 840, as the
    negative-point reward's 40 px do (``RewardConfig.for_frame``), so a target earns that reward:

    >>> neg_point_ring_px((840, 840)), neg_point_ring_px((224, 224)), neg_point_ring_px((56, 56))
    ((5, 20), (1, 5), (1, 1))
    """
    config = config or SampleConfig()
    scale = math.sqrt(float(size_wh[0]) * float(size_wh[1])) / REWARD_THRESHOLD_REFERENCE_PX
    low = max(1, int(round(config.neg_point_min_l1_px * scale)))
    return low, max(low, int(math.floor(config.neg_point_max_l1_px * scale)))


def object_targets(masks_on_frame: Mapping[Any, np.ndarray], size_wh: tuple[int, int],
                   config: SampleConfig | None = None) -> tuple[list[ObjectTarget], np.ndarray]:
    """Per-object GT at ``size_wh`` from original-resolution masks ``{obj: (H, W)}``; plus the union.

    Objects with an empty mask at the model resolution are left out (they are not visible there).
    """
    config = config or SampleConfig()
    resized = {obj: resize_mask(m, size_wh) for obj, m in masks_on_frame.items()}
    union = np.zeros((size_wh[1], size_wh[0]), dtype=bool)
    for m in resized.values():
        union |= m
    targets, ring = [], neg_point_ring_px(size_wh, config)
    for obj, m in resized.items():
        box = mask_box_xyxy(m)
        if box is None:
            continue
        point = mask_centre_point(m)
        neg = negative_point_target(union, point, *ring)
        targets.append(ObjectTarget(obj, box, point, neg))
    return targets, union


def solution_json(targets: Sequence[ObjectTarget]) -> str:
    """The ``solution`` column: ``[{"bbox_2d": [...], "point_2d": [...]}, ...]`` (SPEC §5)."""
    return json.dumps([{"bbox_2d": t.box_xyxy, "point_2d": t.point_xy} for t in targets])


def answer_json(targets: Sequence[ObjectTarget]) -> str:
    """The full answer JSON with negative points (what an SFT target answer contains)."""
    items = []
    for t in targets:
        item = {"bbox_2d": t.box_xyxy, "point_2d": t.point_xy}
        if t.neg_point_xy is not None:
            item["neg_point_2d"] = t.neg_point_xy
        items.append(item)
    return json.dumps(items)


# ============================================================================ frames


def visible_frames(object_masks: Mapping[Any, np.ndarray], min_area_px: int = SAMPLE_MIN_AREA_PX
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: (all targets visible (T,), any target visible (T,), union area in pixels (T,))."""
    areas = np.stack([np.asarray(m, bool).reshape(m.shape[0], -1).sum(axis=1) for m in object_masks.values()])
    visible = areas >= min_area_px  # (O, T)
    return visible.all(axis=0), visible.any(axis=0), areas.sum(axis=0)


def choose_target_frame(object_masks: Mapping[Any, np.ndarray], config: SampleConfig,
                        rng: random.Random, given: int | None = None) -> int | None:
    """Target frame index by ``config.target_frame_rule`` among frames where targets are visible.

    Frames where all targets are visible are preferred over frames where only some are; None when
    no target is visible anywhere. Rules: ``given`` (the default: the benchmark's own
    ``target_frame`` — the synthetic benchmark has one — when it is a candidate, else ``largest``),
    ``largest`` (largest union area: the clearest view), ``random`` (seeded), ``middle`` (median
    candidate), ``first``.
    """
    all_vis, any_vis, area = visible_frames(object_masks, config.min_area_px)
    candidates = np.nonzero(all_vis)[0]
    if len(candidates) == 0:
        candidates = np.nonzero(any_vis)[0]
    if len(candidates) == 0:
        return None
    rule = config.target_frame_rule
    if rule == "given" and given is not None and int(given) in set(candidates.tolist()):
        return int(given)
    if rule == "random":
        return int(rng.choice(candidates.tolist()))
    if rule == "middle":
        return int(candidates[len(candidates) // 2])
    if rule == "first":
        return int(candidates[0])
    return int(candidates[np.argmax(area[candidates])])


def key_segment_around(target: int, any_visible: np.ndarray, fraction: float) -> tuple[int, int]:
    """Inclusive key segment: the visible run containing ``target``, at most ``fraction``·T long."""
    t = len(any_visible)
    lo = hi = target
    while lo > 0 and any_visible[lo - 1]:
        lo -= 1
    while hi < t - 1 and any_visible[hi + 1]:
        hi += 1
    max_len = max(1, int(math.floor(fraction * t)))
    if hi - lo + 1 > max_len:
        lo = max(lo, target - max_len // 2)
        hi = min(hi, lo + max_len - 1)
        lo = max(0, min(lo, hi - max_len + 1))
    return lo, hi


def context_frame_indices(num_frames: int, key_segment: tuple[int, int], target: int,
                          num_key: int, num_reference: int) -> tuple[list[int], list[int]]:
    """(key-segment frames without the target, reference frames): the function HTFS uses at inference
    (``reasoning.sampler.context_frame_indices``), so a sample shows what inference will show."""
    from videoseg_r1.reasoning.sampler import context_frame_indices as inference_context

    return inference_context(num_frames, key_segment, target, num_key, num_reference)


# ============================================================================ prompt


def reasoning_prompt_text(query: str, width: int, height: int, convention: str = "absolute") -> str:
    """The reasoning prompt text exactly as the inference step renders it (``reasoning.reason``)."""
    from videoseg_r1.reasoning.reason import reasoning_prompt

    return reasoning_prompt(query, width, height, convention)


def build_prompt(query: str, width: int, height: int, timestamps_s: Sequence[float]) -> list[dict[str, Any]]:
    """TRL conversational prompt of the reasoning step (see :func:`image_prompt`)."""
    return image_prompt(reasoning_prompt_text(query, width, height), timestamps_s)


def image_prompt(text: str, timestamps_s: Sequence[float]) -> list[dict[str, Any]]:
    """TRL conversational prompt laid out like ``Reasoner.build_messages`` with separate images.

    Each image slot ``{"type": "image"}`` is preceded by ``"Frame at <t> s:"``; TRL fills the slots,
    in order, from the ``images`` column (for the reasoning step: context frames, then the target frame).
    """
    content: list[dict[str, Any]] = []
    for t in timestamps_s:
        content.append({"type": "text", "text": f"Frame at {float(t):.2f} s:"})
        content.append({"type": "image", "text": None})
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def htfs_samples(query: str, key_segment: tuple[int, int], target: int, timestamps: Sequence[float],
                 config: SampleConfig, rng: random.Random) -> list[tuple[str, tuple[int, int], str]]:
    """``(task, segment shown, answer text)`` of the HTFS samples of one expression (module docstring).

    >>> htfs_samples("x", (10, 19), 12, [i / 10 for i in range(40)], SampleConfig(tasks=("position",)),
    ...              random.Random(0))
    [('position', (10, 19), '<answer>0.25</answer>')]
    """
    s, e = key_segment
    last = len(timestamps) - 1
    out = []
    if "interval" in config.tasks:
        segments = [(0, last)]
        if s > 0 or e < last:  # a later HTFS round: a segment around the key segment
            segments.append((rng.randint(0, s), rng.randint(e, last)))
        for a, b in segments:  # the answer in the clip's own time (0 s at its first frame), as HTFS asks
            t0 = float(timestamps[a])
            answer = f"<answer>[{float(timestamps[s]) - t0:.2f}, {float(timestamps[e]) - t0:.2f}]</answer>"
            out.append(("interval", (a, b), answer))
    if "position" in config.tasks:
        t_key = e - s + 1
        p = (target - s + 0.5) / t_key  # the middle of the target's slot: floor(t_key * p) = target - s
        out.append(("position", (s, e), f"<answer>{p:.2f}</answer>"))
    return out


# ============================================================================ samples


def _to_pil(frame: np.ndarray, size: int):
    """Square-resize exactly as the inference step does (``reasoning.reason``), as a PIL image."""
    from PIL import Image

    from videoseg_r1.reasoning.reason import _resize_square

    return Image.fromarray(np.ascontiguousarray(_resize_square(np.asarray(frame, dtype=np.uint8), size)))


def frame_images(video, indices: Sequence[int], size: int) -> list:
    """PIL images of the frames ``indices`` square-resized to ``size`` as inference does; a video that
    offers ``square_frames(indices, size)`` (the stream's in-memory videos) serves them from its cache,
    as (size, size, 3) uint8 arrays (the collator cuts an array shown twice in a batch once)."""
    square = getattr(video, "square_frames", None)
    if square is not None:
        return list(square(indices, size))
    return [_to_pil(f, size) for f in video.get_frames(indices)]


def _load_difficulty_cache(path: str | None):
    if not path:
        return None
    from videoseg_r1.training.difficulty import DifficultyCache

    if not Path(path).is_file():
        raise FileNotFoundError(f"difficulty file not found: {path} (create it with `videoseg-r1 rate-difficulty`)")
    return DifficultyCache(path)


def _difficulty(reader, expr, benchmark: str, object_masks, cache) -> tuple[float, str]:
    """D by priority: the cache file, the sample's own D (synthetic), the annotation heuristic."""
    from videoseg_r1.training.difficulty import expression_difficulty, sample_key

    cached = cache is not None and sample_key(benchmark, expr.video, expr.exp_id) in cache
    record = expression_difficulty(reader, expr, benchmark, cache=cache, object_masks=object_masks)
    return float(record.difficulty), (f"cache:{record.source}" if cached else record.source)


@dataclass
class BuildReport:
    """What :func:`iter_samples` did: samples written and expressions skipped, with reasons."""

    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def sample_from_expression(reader, expr, benchmark: str, config: SampleConfig, rng: random.Random,
                           cache=None, report: BuildReport | None = None) -> list[dict[str, Any]]:
    """The samples of one expression: per target frame (``config.samples_per_expression`` of them)
    one sample per task of ``config.tasks``."""
    from videoseg_r1.masks import rle_encode
    from videoseg_r1.reasoning.sampler import clip_time_axis, htfs_prompt_text, uniform_indices

    report = report or BuildReport()
    if not getattr(expr, "text", "").strip():
        report.skip("empty query")
        return []
    object_masks = reader.object_masks(expr)
    if not object_masks:
        report.skip("no object masks")
        return []
    num_frames = int(next(iter(object_masks.values())).shape[0])
    _, any_vis, _ = visible_frames(object_masks, config.min_area_px)
    if not any_vis.any():
        report.skip("targets never visible")
        return []
    difficulty, source = _difficulty(reader, expr, benchmark, object_masks, cache)
    extra = getattr(expr, "extra", None) or {}
    size = config.model_input_size
    out = []
    used: set[int] = set()
    video = None
    for _ in range(max(1, config.samples_per_expression)):
        given = extra.get("target_frame")
        target = choose_target_frame(object_masks, config, rng, given=given)
        if target is None or target in used:
            break
        used.add(target)
        interval = extra.get("key_interval")
        if interval is not None and len(interval) == 2 and int(interval[0]) <= target <= int(interval[1]):
            key_segment = (int(interval[0]), int(interval[1]))
        else:
            key_segment = key_segment_around(target, any_vis, config.key_segment_fraction)
        key, reference = context_frame_indices(num_frames, key_segment, target,
                                               config.num_key_frames, config.num_reference_frames)
        context = sorted(set(key) | set(reference))
        targets, union = object_targets({o: m[target] for o, m in object_masks.items()}, (size, size), config)
        if not targets:
            report.skip("targets vanish at model resolution")
            continue
        if video is None:
            video = reader.open_video(expr.video)
        timestamps = video.timestamps()
        common = {"difficulty": float(difficulty), "difficulty_source": source, "benchmark": benchmark,
                  "video": str(expr.video), "exp_id": str(expr.exp_id), "query": str(expr.text),
                  "num_frames": num_frames, "target_frame_idx": int(target)}
        rows = []
        if "reasoning" in config.tasks:
            shown = context + [target]
            images = frame_images(video, context, config.context_frame_size) + frame_images(video, [target], size)
            rows.append({
                "prompt": build_prompt(expr.text, size, size, [float(timestamps[i]) for i in shown]),
                "images": images,
                "solution": solution_json(targets),
                "neg_points": json.dumps([t.neg_point_xy for t in targets]),
                "gt_mask_rle": json.dumps(rle_encode(union)),
                "frame_size": [size, size],
                **common,
                "frame_indices": shown,
                "task": "reasoning",
                "answer": "",
            })
        for task, (a, b), answer in htfs_samples(expr.text, key_segment, target, timestamps, config, rng):
            shown = uniform_indices(a, b, config.htfs_max_frames_shown)
            _, clip_times = clip_time_axis(timestamps, shown)
            hs = config.htfs_frame_size
            rows.append({
                "prompt": image_prompt(htfs_prompt_text(task, expr.text, clip_times), clip_times),
                "images": frame_images(video, shown, hs),
                "solution": "[]", "neg_points": "[]", "gt_mask_rle": "", "frame_size": [hs, hs],
                **common,
                "frame_indices": shown,
                "task": task,
                "answer": answer,
            })
        for row in rows:
            row.update(config.extra_columns)
        out.extend(rows)
        report.samples += len(rows)
    return out


def expression_rng(config: SampleConfig, expr) -> random.Random:
    """The expression's own generator (seeded by ``config.seed``, video and expression id), so samples
    do not depend on the order or the process that builds them."""
    return random.Random(f"{config.seed}/{expr.video}/{expr.exp_id}")


def iter_samples(reader, benchmark: str, config: SampleConfig | None = None,
                 report: BuildReport | None = None, workers: int = 1,
                 encode_images: bool = False) -> Iterator[dict[str, Any]]:
    """Samples of every expression of ``reader``, in expression order (deterministic for a given
    ``config.seed``); ``workers`` > 1 builds expressions in that many forked processes.
    ``encode_images``: images as ``{"bytes": PNG, "path": None}`` (what a ``datasets.Image`` column
    stores; encoded by the workers, so building a large dataset is not bound by one process)."""
    config = config or SampleConfig()
    report = report if report is not None else BuildReport()
    cache = _load_difficulty_cache(config.difficulty_file)
    count = 0
    workers = min(int(workers), os.cpu_count() or 1)
    per_expr = (_parallel_samples(reader, benchmark, config, cache, workers, encode_images) if workers > 1
                else _serial_samples(reader, benchmark, config, cache, encode_images))
    for samples, part in per_expr:
        report.samples += part.samples
        for reason, n in part.skipped.items():
            report.skipped[reason] = report.skipped.get(reason, 0) + n
        for sample in samples:
            yield sample
            count += 1
            if config.max_samples is not None and count >= config.max_samples:
                return


def png_image(image) -> dict[str, Any]:
    """An RGB PIL image as a ``datasets.Image`` value: lossless PNG bytes (light compression: fast)."""
    import cv2

    ok, png = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image)[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding of a training image failed")
    return {"bytes": png.tobytes(), "path": None}


def _one_expression(reader, expr, benchmark: str, config: SampleConfig, cache, encode_images: bool):
    part = BuildReport()
    samples = sample_from_expression(reader, expr, benchmark, config, expression_rng(config, expr), cache, part)
    if encode_images:
        for sample in samples:
            sample["images"] = [png_image(im) for im in sample["images"]]
    return samples, part


def _serial_samples(reader, benchmark: str, config: SampleConfig, cache, encode_images: bool):
    for expr in reader.expressions():
        yield _one_expression(reader, expr, benchmark, config, cache, encode_images)


_FORKED: dict[str, Any] = {}  # what forked sample builders inherit (the reader cannot always be pickled)


def _build_one(index: int):
    f = _FORKED
    return _one_expression(f["reader"], f["expressions"][index], f["benchmark"], f["config"], f["cache"], f["encode"])


def _parallel_samples(reader, benchmark: str, config: SampleConfig, cache, workers: int, encode_images: bool):
    import multiprocessing as mp

    expressions = list(reader.expressions())
    _FORKED.update(reader=reader, expressions=expressions, benchmark=benchmark, config=config, cache=cache,
                   encode=encode_images)
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_build_one, range(len(expressions)), chunksize=4)
    finally:
        _FORKED.clear()


def dataset_features():
    """``datasets.Features`` of the sample dataset (images as a list of ``Image``)."""
    from datasets import Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    message = {"role": Value("string"), "content": List(part)}
    return Features({
        "prompt": List(message),
        "images": List(Image()),
        "solution": Value("string"),
        "neg_points": Value("string"),
        "gt_mask_rle": Value("string"),
        "frame_size": List(Value("int32")),
        "difficulty": Value("float32"),
        "difficulty_source": Value("string"),
        "benchmark": Value("string"),
        "video": Value("string"),
        "exp_id": Value("string"),
        "query": Value("string"),
        "num_frames": Value("int32"),
        "target_frame_idx": Value("int32"),
        "frame_indices": List(Value("int32")),
        "task": Value("string"),
        "answer": Value("string"),
    })


def build_dataset(reader, benchmark: str, config: SampleConfig | None = None,
                  report: BuildReport | None = None, workers: int = 1):
    """A ``datasets.Dataset`` of all samples of ``reader`` (columns: ``COLUMNS``), built in
    ``workers`` processes.

    Raises ``ValueError`` naming the benchmark when no expression yields a sample.
    """
    from datasets import Dataset

    config = config or SampleConfig()
    report = report if report is not None else BuildReport()
    rows = list(iter_samples(reader, benchmark, config, report, workers, encode_images=True))
    if not rows:
        raise ValueError(
            f"no training sample could be built from benchmark {benchmark!r} (split {config.split!r}); "
            f"skipped expressions: {report.skipped or 'none found'} — check --data-root and --split"
        )
    features = dataset_features() if not config.extra_columns else None
    # in chunks: one Arrow array of every image's bytes would pass Arrow's 2 GiB offset limit
    parts = [Dataset.from_dict({name: [row[name] for row in rows[i:i + DATASET_CHUNK_ROWS]] for name in rows[0]},
                               features=features) for i in range(0, len(rows), DATASET_CHUNK_ROWS)]
    if len(parts) == 1:
        return parts[0]
    from datasets import concatenate_datasets

    return concatenate_datasets(parts)


def load_reader(benchmark: str, data_root: str | Path, split: str = "train"):
    """The benchmark reader (``videoseg_r1.data.registry.get_reader``) with a clear error."""
    from videoseg_r1.data.registry import get_reader

    root = Path(data_root)
    if not root.exists():
        raise FileNotFoundError(f"data root not found: {root} (pass --data-root pointing at the {benchmark} folder)")
    return get_reader(benchmark, root, split)
