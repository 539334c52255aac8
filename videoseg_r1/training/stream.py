"""Training samples rendered on the fly from the synthetic generator: a fresh video for every few samples.

The grounding pretraining stage (the small model's stand-in for what Qwen2.5-VL-Instruct brings from
pretraining) and SFT on an unlimited supply of synthetic videos both read this stream. Sample ``i``
is a pure function of (``StreamConfig.seed``, ``i``): video ``i // samples_per_video`` of the
generator's ``split`` is drawn (``data.synthetic.generate_video``; frames JPEG-compressed as the
written benchmark stores them), its candidate samples are built, and slot ``i % samples_per_video``
of a seeded shuffle of them is returned. Tasks (``StreamConfig.tasks``, each with the probability
that a candidate is kept):

* ``refer``: one frame, a query the frame alone answers (attributes, sizes, and positions at the
  first / last frame), answer the JSON list of ``bbox_2d`` / ``point_2d`` / ``neg_point_2d`` of
  every target (prompt ``templates/grounding.txt``);
* ``list``: one frame, every visible shape left to right with its ``label`` (colour and shape), box
  and point (``templates/list.txt``);
* ``reasoning``, ``interval``, ``position``: the samples ``training.samples`` builds from a written
  benchmark, with the same prompts, frames and answers (the pipeline's reasoning and HTFS prompts).

Rows carry ``prompt`` / ``completion`` (TRL's conversational prompt-completion format), ``images``,
``task`` and, for ``refer`` / ``reasoning``, the reward columns (``solution``, ``gt_mask_rle``,
``frame_size``). :func:`stream_dataset` wraps the stream as a ``datasets.Dataset`` of indices that
renders rows when they are read, i.e. in the DataLoader's worker processes; read it in order
(``train_sampling_strategy: sequential``: a batch of consecutive indices renders each of its videos
once). Used by ``training.cli`` (``--benchmark synthetic_stream``) and ``training.grounding_eval``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from videoseg_r1.training.samples import SampleConfig
from videoseg_r1.video import ArrayVideo

STREAM_BENCHMARK = "synthetic_stream"  # the name ``--benchmark`` takes for this source
STREAM_TASKS = ("refer", "list", "reasoning", "interval", "position")
# templates a single frame answers (positions only on the frame the query speaks of)
FRAME_TEMPLATES = frozenset({"color_shape", "shape_only", "color_only", "size_shape", "all_of_color",
                             "size_extreme", "size_extreme_of_shape", "size_vs_anchor"})
WHEN_TEMPLATES = frozenset({"position_extreme", "relation_to_anchor", "side_of_largest"})
STREAM_NUM_VIDEOS = 2_000_000  # virtual length / samples_per_video: far more than any run reads; ours
STREAM_SAMPLES_PER_VIDEO = 8  # ours: about the expressions a generated video has
STREAM_FRAMES = 16  # frames per generated video; ours (the benchmark's videos have 32-64)


@dataclass
class StreamConfig:
    """What the stream renders (module docstring). ``samples`` sets sizes and the reasoning / HTFS
    layout exactly as for a written benchmark; its ``tasks`` field is ignored (``tasks`` here rules)."""

    tasks: dict[str, float] = field(default_factory=lambda: {"refer": 1.0, "list": 0.5})
    split: str = "train"
    seed: int = 0
    frames: int = STREAM_FRAMES
    size_wh: tuple[int, int] = (320, 240)
    samples_per_video: int = STREAM_SAMPLES_PER_VIDEO
    num_videos: int = STREAM_NUM_VIDEOS
    jpeg_quality: int = 95
    samples: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self):
        self.tasks = {str(k): float(v) for k, v in dict(self.tasks).items()}
        unknown = set(self.tasks) - set(STREAM_TASKS)
        if unknown or not any(v > 0 for v in self.tasks.values()):
            raise ValueError(f"stream tasks {self.tasks}: give a keep probability > 0 to some of {STREAM_TASKS}")
        self.size_wh = (int(self.size_wh[0]), int(self.size_wh[1]))
        if self.samples_per_video < 1 or self.num_videos < 1:
            raise ValueError("samples_per_video and num_videos must be at least 1")

    def __len__(self) -> int:
        return self.num_videos * self.samples_per_video


# ---------------------------------------------------------------- one video in memory, as a reader


class InMemorySyntheticReader:
    """Generated ``SyntheticVideo`` objects seen through the reader interface ``training.samples``
    uses (``expressions``, ``object_masks``, ``open_video``), with the ``Expression.extra`` that
    ``data.synthetic_reader.SyntheticReader`` gives the written benchmark."""

    name = "synthetic"

    def __init__(self, videos, jpeg_quality: int | None = 95):
        self.videos = {v.name: v for v in videos}
        self.jpeg_quality = jpeg_quality
        self._frames: dict[tuple[str, int], np.ndarray] = {}
        self._open: dict[str, SquareCachedVideo] = {}

    def expressions(self, video: str | None = None):
        from videoseg_r1.data.base import Expression

        for name, v in self.videos.items():
            if video is not None and name != video:
                continue
            for e in v.expressions:
                yield Expression(video=name, exp_id=e.exp_id, text=e.text, obj_ids=list(e.obj_ids),
                                 type_id=e.type_id, extra={
                                     "split": v.split, "tier": e.tier, "difficulty": e.difficulty,
                                     "template": e.template, "params": dict(e.params),
                                     "key_interval": list(e.key_interval), "target_frame": e.target_frame,
                                     "num_targets": len(e.obj_ids)})

    def object_masks(self, expr) -> dict[Any, np.ndarray]:
        v = self.videos[expr.video]
        return {k: v.label_maps == k for k in expr.obj_ids}

    def frame(self, video: str, index: int) -> np.ndarray:
        """Frame ``index`` as the written benchmark stores it (JPEG at ``jpeg_quality``), made once."""
        key = (video, int(index))
        if key not in self._frames:
            frame = self.videos[video].frames[int(index)]
            if self.jpeg_quality:
                import cv2

                ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]),
                                       [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
                frame = np.ascontiguousarray(cv2.imdecode(jpg, cv2.IMREAD_COLOR)[:, :, ::-1])
            self._frames[key] = frame
        return self._frames[key]

    def open_video(self, video: str) -> "SquareCachedVideo":
        if video not in self._open:
            v = self.videos[video]
            self._open[video] = SquareCachedVideo(_LazyFrames(self, video, v.num_frames), fps=v.fps, name=video)
        return self._open[video]


class _LazyFrames:
    """The frames of one in-memory video, JPEG round trip made on first access."""

    def __init__(self, reader: InMemorySyntheticReader, video: str, count: int):
        self.reader, self.video, self.count = reader, video, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        if not -self.count <= index < self.count:
            raise IndexError(index)
        return self.reader.frame(self.video, index % self.count)


class SquareCachedVideo(ArrayVideo):
    """An ``ArrayVideo`` that keeps each square-resized frame (``samples.frame_images``): the samples
    of a video show the same frames at the same few sizes. ``frames`` may be lazy (a sequence that
    makes each frame when first read)."""

    def __init__(self, frames, fps: float, name: str):
        from pathlib import Path

        self.frames, self.path, self.fps, self.short_side = frames, Path(name), float(fps), None
        self.orig_height, self.orig_width = frames[0].shape[:2]

    def square_frames(self, indices, size: int) -> list[np.ndarray]:
        from videoseg_r1.reasoning.reason import _resize_square

        cache = self.__dict__.setdefault("_square", {})
        out = []
        for i in indices:
            key = (int(i), int(size))
            if key not in cache:
                cache[key] = np.ascontiguousarray(_resize_square(self.get_frames([int(i)])[0], int(size)))
            out.append(cache[key])
        return out


# ---------------------------------------------------------------- the grounding tasks


def _frame_for(expr, num_frames: int) -> int:
    when = (expr.extra.get("params") or {}).get("when")
    if when == "start":
        return 0
    if when == "end":
        return num_frames - 1
    return int(expr.extra["target_frame"])


def refer_sample(reader: InMemorySyntheticReader, expr, config: SampleConfig) -> dict[str, Any] | None:
    """The ``refer`` sample of one expression, or None when a single frame does not answer it (or a
    target is not visible there at the model's input size)."""
    from videoseg_r1.masks import rle_encode
    from videoseg_r1.reasoning.reasoner import render_template
    from videoseg_r1.training.samples import answer_json, frame_images, object_targets, solution_json

    template = expr.extra.get("template")
    if template not in FRAME_TEMPLATES and template not in WHEN_TEMPLATES:
        return None
    masks = reader.object_masks(expr)
    num_frames = int(next(iter(masks.values())).shape[0])
    t = _frame_for(expr, num_frames)
    size = config.model_input_size
    targets, union = object_targets({o: m[t] for o, m in masks.items()}, (size, size), config)
    if len(targets) != len(masks) or any(int(m[t].sum()) < config.min_area_px for m in masks.values()):
        return None
    text = render_template("grounding", query=expr.text, width=size, height=size)
    return {"prompt": _one_image_prompt(text),
            "completion": [{"role": "assistant", "content": answer_json(targets)}],
            "images": frame_images(reader.open_video(expr.video), [t], size),
            "task": "refer", "solution": solution_json(targets), "gt_mask_rle": json.dumps(rle_encode(union)),
            "frame_size": [size, size], "query": expr.text, "video": expr.video, "exp_id": str(expr.exp_id),
            "target_frame_idx": t}


def _one_image_prompt(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": text}]}]


def list_sample(reader: InMemorySyntheticReader, video_name: str, rng: random.Random,
                config: SampleConfig) -> dict[str, Any] | None:
    """The ``list`` sample of a random frame of the video (None when no shape is visible there)."""
    from videoseg_r1.reasoning.reasoner import render_template
    from videoseg_r1.training.samples import frame_images, object_targets

    v = reader.videos[video_name]
    t = rng.randrange(v.num_frames)
    size = config.model_input_size
    masks = {o.obj_id: v.label_maps[t] == o.obj_id for o in v.objects}
    masks = {k: m for k, m in masks.items() if int(m.sum()) >= config.min_area_px}
    targets, _ = object_targets(masks, (size, size), config)
    if not targets:
        return None
    names = {o.obj_id: f"{o.color} {o.shape}" for o in v.objects}
    items = [{"label": names[tg.obj_id], "bbox_2d": tg.box_xyxy, "point_2d": tg.point_xy}
             for tg in sorted(targets, key=lambda tg: (tg.box_xyxy[0], tg.box_xyxy[1]))]
    text = render_template("list", width=size, height=size)
    return {"prompt": _one_image_prompt(text), "completion": [{"role": "assistant", "content": json.dumps(items)}],
            "images": frame_images(reader.open_video(video_name), [t], size), "task": "list", "video": video_name,
            "target_frame_idx": t}


# ---------------------------------------------------------------- the stream


def _video_seed(config: StreamConfig, video_index: int) -> int:
    return int(np.random.SeedSequence([int(config.seed), 7919, int(video_index)]).generate_state(1)[0])


def video_samples(config: StreamConfig, video_index: int) -> list[dict[str, Any]]:
    """All kept candidate samples of one stream video, in a seeded shuffled order."""
    from dataclasses import replace

    from videoseg_r1.data.synthetic import generate_video
    from videoseg_r1.training.samples import sample_from_expression

    rng = random.Random(_video_seed(config, video_index))
    video = generate_video(_video_seed(config, video_index), config.split, video_index, frames=config.frames,
                           size=config.size_wh)
    reader = InMemorySyntheticReader([video], config.jpeg_quality)
    want = {t for t, p in config.tasks.items() if p > 0}
    keep = lambda task: task in want and rng.random() < config.tasks[task]  # noqa: E731
    out: list[dict[str, Any]] = []
    for expr in reader.expressions():
        if keep("refer"):
            row = refer_sample(reader, expr, config.samples)
            if row is not None:
                out.append(row)
        tasks = tuple(t for t in ("reasoning", "interval", "position") if keep(t))
        if tasks:  # (an expression's two interval samples are kept or dropped together)
            cfg = replace(config.samples, tasks=tasks, max_samples=None)
            for row in sample_from_expression(reader, expr, "synthetic", cfg, random.Random(rng.random())):
                out.append(_as_prompt_completion(row))
    if keep("list"):
        row = list_sample(reader, video.name, rng, config.samples)
        if row is not None:
            out.append(row)
    rng.shuffle(out)
    return out


def _as_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    from videoseg_r1.training.sft import sft_answer_text

    text = row["answer"] if row["task"] != "reasoning" else \
        sft_answer_text(row["query"], row["solution"], row.get("neg_points"))
    return {**row, "completion": [{"role": "assistant", "content": text}]}


class SampleStream:
    """``stream[i]``: sample ``i`` (module docstring); keeps the last video's samples (a batch of
    consecutive indices renders each video once)."""

    def __init__(self, config: StreamConfig):
        self.config = config
        self._cached: tuple[int, list] | None = None

    def __len__(self) -> int:
        return len(self.config)

    def __getitem__(self, index: int) -> dict[str, Any]:
        g = self.config.samples_per_video
        video, slot = divmod(int(index), g)
        while True:
            if self._cached is None or self._cached[0] != video:
                self._cached = (video, video_samples(self.config, video))
            rows = self._cached[1]
            if rows:
                return rows[slot % len(rows)]
            video += len(self.config) // g  # a video with no kept sample: take one far away, deterministically
            video %= self.config.num_videos


ROW_COLUMNS = ("prompt", "completion", "images", "task")


def stream_dataset(config: StreamConfig, columns: tuple[str, ...] = ROW_COLUMNS):
    """A ``datasets.Dataset`` of ``len(config)`` indices whose rows are rendered when read (only
    ``columns`` of each row are returned, so every batch has the same keys)."""
    from datasets import Dataset

    stream = SampleStream(config)
    ds = Dataset.from_dict({"index": np.arange(len(config), dtype=np.int64)})

    def render(batch: Mapping[str, list]) -> dict[str, list]:
        rows = [stream[int(i)] for i in batch["index"]]
        return {c: [row.get(c) for row in rows] for c in columns}

    ds.set_transform(render)
    ds.stream_config = config  # read by training.sft (rows are already prompt-completion)
    return ds
