"""The end-to-end VideoSeg-R1 pipeline: HTFS -> reasoning -> SAM2 key-frame masks -> propagation.

``load_pipeline(config)`` / ``VideoSegR1Pipeline.from_config(config)`` load the models once;
``pipeline(video, query)`` returns a :class:`Result` with per-object mask tracks and a
:class:`~videoseg_r1.types.Trace`. Every stage can be swapped for ablations: the frame selector
(HTFS, or a fixed first/middle/given frame), the prompts (reasoning, or given prompts such as
ground truth), the SAM2 prompt types (``SegmenterConfig.use_*``) and the propagator.
Called by ``segment``, ``predict``, ``demo`` and the benchmark scripts.

    >>> pipe = load_pipeline(preset="synthetic-small", device="cpu")      # doctest: +SKIP
    >>> result = pipe("video.mp4", "the dog that jumps first")            # doctest: +SKIP
    >>> result.tracks.union().shape, result.trace.sampler["target_frame_idx"]  # doctest: +SKIP
"""

from __future__ import annotations

import resource
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from videoseg_r1.config import PipelineConfig, load_config
from videoseg_r1.results import MaskTracks
from videoseg_r1.types import ObjectPrompt, SampledFrames, Trace
from videoseg_r1.video import Video, as_video


class FrameSelector(Protocol):
    """Stage 1: choose the key segment, target frame and reference frames."""

    def sample(self, video: Video, query: str) -> SampledFrames: ...


@dataclass
class FixedFrameSelector:
    """Ablation stand-in for HTFS: the target frame is the first, the middle or a given index;
    the key segment is the whole video and no reasoning model is asked."""

    frame: str | int = "middle"
    num_context_frames: int = 8

    def sample(self, video: Video, query: str) -> SampledFrames:
        from videoseg_r1.reasoning.sampler import uniform_indices

        n = len(video)
        if self.frame == "first":
            target = 0
        elif self.frame == "middle":
            target = n // 2
        else:
            target = int(self.frame)
            if not 0 <= target < n:
                raise ValueError(f"fixed target frame {target} is outside the video's {n} frames")
        return SampledFrames(num_frames=n, key_segment=(0, n - 1), target_frame_idx=target,
                             key_frame_indices=uniform_indices(0, n - 1, self.num_context_frames),
                             reference_frame_indices=[], fallbacks=[f"fixed_target_frame:{self.frame}"])


@dataclass
class Result:
    """What one pipeline call produced.

    ``tracks``: per-object masks (T, H, W) at the video's original resolution, object ids 1..K in
    the order of the model's answer. ``key_masks``: SAM2's masks on the target frame.
    ``reasoning``: the reasoning step's full output (None when prompts were given).
    """

    tracks: MaskTracks
    trace: Trace
    sampled: SampledFrames
    prompts: list[ObjectPrompt]
    key_masks: dict[int, np.ndarray] = field(default_factory=dict)
    reasoning: Any = None
    video: Video | None = None

    def save(self, out: str | Path, overlay: bool = True, fmt: str = "png") -> Path:
        """Write what ``videoseg-r1 segment`` writes to the folder ``out`` (masks as palette PNGs,
        or ``masks.json`` with ``fmt="rle"``; ``overlay.mp4`` unless ``overlay=False``; ``trace.json``).
        An existing output of ours is replaced; nothing half-written is left on failure."""
        from videoseg_r1.segment_cli import write_outputs

        if self.video is None:
            raise ValueError("this result holds no video to save from")
        write_outputs(self, self.video, Path(out), fmt=fmt, overlay=overlay)
        return Path(out)

    @property
    def target_frame_idx(self) -> int:
        return self.sampled.target_frame_idx

    @property
    def num_objects(self) -> int:
        return len(self.key_masks)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class VideoSegR1Pipeline:
    """Holds the loaded models; call it with a video (path or ``Video``) and a query."""

    def __init__(self, config: PipelineConfig | None = None, *, reasoner=None, frame_selector: FrameSelector | None = None,
                 segmenter=None, propagator=None):
        self.config = config or PipelineConfig()
        self.reasoner = reasoner
        self.frame_selector = frame_selector
        self.segmenter = segmenter
        self.propagator = propagator
        self._vision_owner: weakref.ref | None = None  # the video the reasoners' vision caches belong to

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: PipelineConfig | str | Path | None = None, **components) -> "VideoSegR1Pipeline":
        """Load every model the config names; components given as keywords are used as they are
        (``reasoner``, ``frame_selector``, ``segmenter``, ``propagator``)."""
        if isinstance(config, (str, Path)):
            config = load_config(config)
        config = config or PipelineConfig()
        reasoner = components.get("reasoner")
        frame_selector = components.get("frame_selector")
        # A fixed frame selector with given prompts needs no language model at all.
        if reasoner is None and components.get("load_reasoner", True):
            from videoseg_r1.reasoning.reasoner import Reasoner

            reasoner = Reasoner.from_pretrained(config=config.reasoner)
        if frame_selector is None:
            from videoseg_r1.reasoning.sampler import FrameSampler

            frame_selector = FrameSampler(stage_one_reasoner(reasoner, config), config.sampler)
        segmenter = components.get("segmenter")
        if segmenter is None:
            from videoseg_r1.segmentation.keyframe import KeyFrameSegmenter

            segmenter = KeyFrameSegmenter(config.segmenter)
        propagator = components.get("propagator")
        if propagator is None:
            from videoseg_r1.segmentation.propagation import make_propagator

            propagator = make_propagator(config.propagator)
        return cls(config, reasoner=reasoner, frame_selector=frame_selector, segmenter=segmenter,
                   propagator=propagator)

    # ------------------------------------------------------------------ running
    def __call__(self, video: Any, query: str, *, prompts: Sequence[ObjectPrompt] | None = None,
                 target_frame_idx: int | None = None, progress: bool = False, fps: float | None = None,
                 seed: int | None = None) -> Result:
        """Segment what ``query`` refers to in ``video``: a ``Video``, a file or folder path, a
        (T, H, W, 3) uint8 array or a list of frames (``fps`` for arrays and folders).
        ``prompts`` (original pixels, on ``target_frame_idx``) skip stages 1-2;
        ``target_frame_idx`` alone fixes the target frame and skips HTFS. ``seed`` (default the
        config's) seeds every sampling step, so the same call gives the same masks."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the query is empty; give a text describing the object(s) to segment")
        query = query.strip()
        video = as_video(video, fps=fps)
        seed = int(self.config.seed if seed is None else seed)
        trace = Trace(video=str(video.path), query=query, num_frames=len(video), fps=float(video.fps), seed=seed)
        import torch

        torch.manual_seed(seed)  # HTFS samples from torch's generator (CPU and every GPU)
        self._claim_vision_caches(video)
        timer = _StageTimer(trace, self._device())

        # Stage 1: where to look
        with timer("sampling"):
            if prompts is not None or target_frame_idx is not None:
                if target_frame_idx is None:
                    raise ValueError("prompts were given without target_frame_idx (the frame they refer to)")
                sampled = FixedFrameSelector(int(target_frame_idx)).sample(video, query)
            else:
                if self.frame_selector is None:
                    raise RuntimeError("this pipeline has no frame selector; build it with from_config()")
                sampled = self.frame_selector.sample(video, query)
        trace.sampler = sampled.to_dict()
        trace.fallbacks.extend(sampled.fallbacks)

        # Stage 2: reasoning -> prompts on the target frame
        reasoning = None
        with timer("reasoning"):
            if prompts is None:
                from videoseg_r1.reasoning.reason import reason

                if self.reasoner is None:
                    raise RuntimeError("this pipeline has no reasoner; build it with from_config()")
                # the reasoner's own config (== config.reasoner when loaded by from_config)
                reasoning = reason(video, sampled, query, self.reasoner,
                                   getattr(self.reasoner, "config", None) or self.config.reasoner)
                prompts = reasoning.prompts
                trace.reasoning_text = reasoning.text
                trace.reasoning_tokens = int(reasoning.reasoning_tokens)
                if reasoning.error:
                    trace.fallbacks.append(f"reasoning: {reasoning.error}")
            prompts = list(prompts)
        trace.prompts = [p.to_dict() for p in prompts]
        for p in prompts:
            if p.error:
                trace.notes.append(f"object {p.obj_idx}: {p.error}")

        # Stage 3a: SAM2 on the target frame (object ids become 1..K for the tracks)
        target = sampled.target_frame_idx
        with timer("keyframe_segmentation"):
            usable = [p for p in prompts if p.usable]
            key = self.segmenter.segment(video.get_frames([target])[0], usable) if usable else None
        key_masks: dict[int, np.ndarray] = {}
        if key is not None:
            trace.notes.extend(key.notes())
            for p in prompts:
                if p.obj_idx in key.masks:
                    key_masks[p.obj_idx + 1] = key.masks[p.obj_idx]
        if not key_masks:
            trace.fallbacks.append("no usable object: every frame is empty")

        # Stage 3b: propagation, forward then backward, streamed into compact tracks
        tracks = MaskTracks(len(video), video.orig_height, video.orig_width, sorted(key_masks))
        with timer("propagation"):
            if key_masks:
                stream = self.propagator.propagate(_original_size(video), target, key_masks)
                if progress:
                    from tqdm import tqdm

                    stream = tqdm(stream, total=len(video), desc="propagating", unit="frame")
                for frame_idx, masks in stream:
                    tracks.set(frame_idx, masks)
        return Result(tracks=tracks, trace=trace, sampled=sampled, prompts=prompts, key_masks=key_masks,
                      reasoning=reasoning, video=video)

    def _claim_vision_caches(self, video: Video) -> None:
        """Empty the vision caches unless ``video`` is the very object they were filled from.

        The reasoners cache visual features by frame index, valid for one video only. The owner is
        kept as a weak reference, not as ``id(video)``: a new video may be given the id (the
        memory) of a collected one, and would then be served the old frames' features. A dead or
        different referent empties every cache: the reasoner's and the frame selector's.
        """
        owner = self._vision_owner() if self._vision_owner is not None else None
        if owner is video:
            return
        holders = [self.reasoner, getattr(self.frame_selector, "reasoner", None)]
        for i, holder in enumerate(holders):
            if holder is not None and all(holder is not h for h in holders[:i]):
                clear = getattr(holder, "clear_vision_cache", None)
                if callable(clear):
                    clear()
        try:
            self._vision_owner = weakref.ref(video)
        except TypeError:  # a Video type without weak references: claim nothing, clear every call
            self._vision_owner = None

    def _device(self) -> str:
        for part in (self.reasoner, self.segmenter, self.propagator):
            dev = getattr(part, "device", None)
            if dev is not None:
                return str(dev)
        return "cpu"


def _original_size(video: Video) -> Video:
    """Propagation writes masks at the stored resolution; a resized view is reopened unresized."""
    if not getattr(video, "short_side", None):
        return video
    import copy

    view = copy.copy(video)
    view.short_side = None
    return view


def stage_one_reasoner(reasoner, config: PipelineConfig):
    """The model that answers HTFS's prompts (SPEC §1: a frozen video LLM), ``config.sampler.model``
    resolved by ``model_settings.stage_one_model``: the reasoner itself when it is that model (one
    copy of the weights); the reasoner with its LoRA adapter off when the stage-1 model is the
    adapter's base (one copy, plus the adapter); else a second model, loaded with the reasoner's
    device and dtype settings."""
    from videoseg_r1.model_settings import same_model, stage_one_model

    if reasoner is None or not hasattr(reasoner, "model"):  # none loaded, or a scripted stand-in
        return reasoner
    name = reasoner.config.model
    wanted = stage_one_model(name, config.sampler.model)
    if same_model(wanted, name):
        return reasoner
    base = reasoner.adapter_base()
    if base is not None and same_model(wanted, base):
        from videoseg_r1.reasoning.reasoner import AdapterDisabledReasoner

        return AdapterDisabledReasoner(reasoner)
    from videoseg_r1.reasoning.reasoner import Reasoner

    return Reasoner.from_pretrained(wanted, reasoner.config)


class _StageTimer:
    """Records wall time and peak memory (GPU when on CUDA, else the process' peak RSS) per stage."""

    def __init__(self, trace: Trace, device: str):
        self.trace = trace
        self.cuda = device.startswith("cuda")

    @contextmanager
    def __call__(self, name: str):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
                self.trace.peak_memory_mb[name] = torch.cuda.max_memory_allocated() / 2**20
            else:
                self.trace.peak_memory_mb[name] = _peak_rss_mb()
            self.trace.stage_seconds[name] = time.perf_counter() - t0


def load_pipeline(config: PipelineConfig | str | Path | None = None, *, preset: str | None = None,
                  reasoner=None, sam2: str | None = None, xmem: str | None = None, sampler_model: str | None = None,
                  propagator: str | None = None, device: str | None = None, dtype: str | None = None,
                  **components) -> VideoSegR1Pipeline:
    """The pipeline with its models loaded, configured as the command line does it.

    ``config``: a ``PipelineConfig`` (used as it is) or a YAML file; ``preset``: e.g.
    ``"synthetic-small"`` (the shipped small models); ``reasoner`` / ``sam2`` / ``xmem`` /
    ``sampler_model``: model ids or folders (as ``--reasoner`` etc.; a loaded reasoner object is
    used as it is); ``device``, ``dtype``, ``propagator`` as on the command line. The layers apply in
    the CLI's order: defaults or preset, the model folders' own settings, the config file, these
    keywords. Other keywords are components (``frame_selector``, ``segmenter``, ``propagator``
    objects) given to :meth:`VideoSegR1Pipeline.from_config`.

        >>> pipe = load_pipeline(preset="synthetic-small", device="cpu")     # doctest: +SKIP
        >>> result = pipe("clip.mp4", "the shape that stops first")          # doctest: +SKIP
        >>> result.save("out/")                                              # doctest: +SKIP
    """
    if isinstance(config, PipelineConfig):
        if preset or isinstance(reasoner, (str, Path)) or sam2 or xmem or sampler_model or device or dtype:
            raise ValueError("give either a PipelineConfig or the keywords that build one, not both")
        return VideoSegR1Pipeline.from_config(config, **components,
                                              **({"reasoner": reasoner} if reasoner is not None else {}))
    import argparse

    from videoseg_r1.cli_common import add_model_arguments, config_from_args

    name = str(reasoner) if isinstance(reasoner, (str, Path)) else None
    if reasoner is not None and name is None:
        components["reasoner"] = reasoner
    if propagator is not None and not isinstance(propagator, str):
        components["propagator"], propagator = propagator, None
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)  # every flag's default, as the command line has them
    args = parser.parse_args([])
    for key, value in dict(config=str(config) if config is not None else None, preset=preset, reasoner=name,
                           sam2=sam2, xmem=xmem, sampler_model=sampler_model, propagator=propagator,
                           device=device, dtype=dtype).items():
        setattr(args, key, value)
    return VideoSegR1Pipeline.from_config(config_from_args(args), **components)
