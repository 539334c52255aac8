"""Mask propagation from the key frame through the whole video: the ``Propagator`` protocol and XMem.

The pipeline hands a propagator the video, the key-frame index and one boolean mask per object
(from :mod:`videoseg_r1.segmentation.keyframe`); the propagator yields ``(frame_idx, {obj_id: mask})``
for the key frame first, then forward to the last frame, then backward to the first frame, each
frame exactly once (:func:`propagation_order`). :func:`collect_tracks` merges the stream into one
(T, H, W) track per object. Masks are (H, W) bool at the size of the frames the ``Video`` returns.

``XMemPropagator`` (default backend) streams frames: a background thread decodes the next chunk
while the device works, a chunk of upcoming frames is key-encoded in one batch (keys do not depend
on memory), the key frame is encoded once and its memory state is cloned for the backward pass, and
on CUDA the mask copies to the host are asynchronous so the host never waits on the GPU per frame.
On CUDA the fixed-shape parts of the loop (key encoder, value encoder, decoder) are replayed from CUDA
graphs (:mod:`videoseg_r1.segmentation.xmem.graphs`) and the last, partial chunk of each direction is
padded to ``key_batch`` frames, so that every key-encoder call has the same shape (one graph, no
cudnn re-tuning for a new batch size).
Only one direction's memory is alive at a time, and XMem's memory is bounded (SPEC §1 stage 3), so
device memory does not grow with the number of frames.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from videoseg_r1.config import PropagatorConfig, resolve_device, resolve_dtype
from videoseg_r1.video import Video

Masks = dict[int, np.ndarray]

DEFAULT_KEY_BATCH = 8  # frames key-encoded per batch; ours (speed/memory trade-off, see benchmarks/)
DEFAULT_OUTPUT_LAG = 2  # CUDA: frames in flight before the host waits for a mask copy; ours


@runtime_checkable
class Propagator(Protocol):
    """Anything that turns key-frame masks into per-frame masks for the whole video."""

    def propagate(self, video: Video, key_frame_idx: int, key_masks: Mapping[int, np.ndarray]
                  ) -> Iterator[tuple[int, Masks]]:
        """Yield (frame_idx, {obj_id: (H, W) bool}) in :func:`propagation_order`."""
        ...


def propagation_order(num_frames: int, key_frame_idx: int) -> list[int]:
    """Key frame, then forward to the end, then backward to the start: every frame once."""
    if not 0 <= key_frame_idx < num_frames:
        raise IndexError(f"key frame {key_frame_idx} out of range for a video of {num_frames} frames")
    return [key_frame_idx, *range(key_frame_idx + 1, num_frames), *range(key_frame_idx - 1, -1, -1)]


def collect_tracks(stream: Iterable[tuple[int, Masks]], num_frames: int, size_hw: tuple[int, int],
                   obj_ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Merge a propagation stream into one track per object: {obj_id: (T, H, W) bool}.

    Frames the stream does not cover stay empty; a frame given twice keeps the first masks (the
    key frame's, which both directions start from)."""
    tracks = {obj: np.zeros((num_frames, *size_hw), dtype=bool) for obj in obj_ids}
    seen: set[int] = set()
    for frame_idx, masks in stream:
        if frame_idx in seen:
            continue
        seen.add(frame_idx)
        for obj, mask in masks.items():
            if obj in tracks:
                tracks[obj][frame_idx] = mask
    return tracks


def check_key_masks(video: Video, key_frame_idx: int, key_masks: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Validate the inputs every propagator shares; returns the masks as bool arrays sorted by id."""
    n = len(video)
    if not 0 <= key_frame_idx < n:
        raise IndexError(f"key frame {key_frame_idx} out of range for {video.path} ({n} frames)")
    out = {}
    for obj in sorted(key_masks):
        mask = np.asarray(key_masks[obj]).astype(bool)
        if mask.shape != (video.height, video.width):
            raise ValueError(f"key mask of object {obj} has shape {mask.shape}, but the frames of {video.path} "
                             f"are {(video.height, video.width)}")
        out[int(obj)] = mask
    return out


# ------------------------------------------------------------------------------------- streaming


class _ChunkPrefetcher:
    """Decodes frames ``indices`` of a video in a background thread, in chunks of ``chunk`` frames.

    Iterating yields (frame indices, uint8 array (B, H, W, 3)); at most two chunks wait in memory.
    ``pin``: the thread also copies each chunk into page-locked memory (a uint8 torch tensor), ready
    for an asynchronous upload, so the consuming thread does not pay for that copy."""

    def __init__(self, video: Video, start: int, stop: int, step: int, chunk: int, pin: bool = False):
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._pin = pin
        self._args = (video, start, stop, step, max(1, chunk))
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        video, start, stop, step, chunk = self._args
        try:
            indices, frames = [], []
            for idx, frame in zip(range(start, stop, step), video.iter_frames(start, stop, step)):
                indices.append(idx)
                frames.append(frame)
                if len(frames) == chunk:
                    if not self._put((indices, self._pack(frames))):
                        return
                    indices, frames = [], []
            if frames:
                self._put((indices, self._pack(frames)))
            self._put(None)
        except BaseException as exc:  # surfaced in the consumer thread
            self._put(exc)

    def _pack(self, frames: list[np.ndarray]):
        if not self._pin:
            return np.stack(frames)
        import torch

        out = torch.empty((len(frames), *np.shape(frames[0])), dtype=torch.uint8, pin_memory=True)
        dst = out.numpy()
        for i, frame in enumerate(frames):
            dst[i] = frame
        return out

    def __iter__(self) -> Iterator[tuple[list[int], np.ndarray]]:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


class _MaskEmitter:
    """Turns label maps on the device into {obj_id: bool mask} dicts; on CUDA the device-to-host copy
    is asynchronous and results come out ``lag`` frames later (``flush`` drains the rest)."""

    def __init__(self, obj_ids: list[int], device, lag: int):
        import torch

        self.obj_ids = obj_ids
        self.cuda = torch.device(device).type == "cuda"
        self.lag = lag if self.cuda else 0
        self.pending: deque = deque()

    def _to_masks(self, labels: np.ndarray) -> Masks:
        return {obj: labels == i + 1 for i, obj in enumerate(self.obj_ids)}

    def push(self, frame_idx: int, labels) -> Iterator[tuple[int, Masks]]:
        import torch

        if not self.cuda:
            yield frame_idx, self._to_masks(labels.cpu().numpy())
            return
        host = torch.empty(labels.shape, dtype=labels.dtype, pin_memory=True)
        host.copy_(labels, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((frame_idx, host, event))
        while len(self.pending) > self.lag:
            yield self._pop()

    def _pop(self) -> tuple[int, Masks]:
        frame_idx, host, event = self.pending.popleft()
        event.synchronize()
        return frame_idx, self._to_masks(host.numpy())

    def flush(self) -> Iterator[tuple[int, Masks]]:
        while self.pending:
            yield self._pop()


# ------------------------------------------------------------------------------------- XMem


class XMemPropagator:
    """Our XMem behind the :class:`Propagator` protocol.

    ``network``: an :class:`~videoseg_r1.segmentation.xmem.XMem` (else loaded from
    ``config.checkpoint``, a path or URL of the official release file). ``dtype``: "auto" -> bf16
    weights on CUDA, fp32 on CPU (memory keys and the affinity stay fp32 either way).
    ``key_batch`` frames are key-encoded per batch. ``directions``: "both", "forward" or "backward".
    ``cuda_graphs`` (default: on for CUDA) replays the fixed-shape network parts from CUDA graphs;
    ``pad_key_batch`` (default: with ``cuda_graphs``) pads a partial last chunk to ``key_batch`` frames.
    """

    def __init__(self, network=None, config: PropagatorConfig | None = None, *, device: str | None = None,
                 dtype: str | None = None, key_batch: int = DEFAULT_KEY_BATCH, directions: str = "both",
                 channels_last: bool | None = None, output_lag: int = DEFAULT_OUTPUT_LAG,
                 cuda_graphs: bool | None = None, pad_key_batch: bool | None = None):
        import torch

        from videoseg_r1.segmentation.xmem import InferenceConfig, InferenceCore, MemoryConfig, load_xmem

        self.config = config or PropagatorConfig()
        self.device = resolve_device(device or self.config.device)
        self.dtype = resolve_dtype(dtype or self.config.dtype, self.device)
        if directions not in ("both", "forward", "backward"):
            raise ValueError(f"directions must be 'both', 'forward' or 'backward', got {directions!r}")
        self.directions = directions
        self.key_batch = max(1, int(key_batch))
        self.output_lag = max(0, int(output_lag))
        if network is None:
            network = load_xmem(self.config.checkpoint, device=self.device)
        else:
            network = copy.deepcopy(network) if next(network.parameters()).dtype != self.dtype else network
        network = network.to(device=self.device, dtype=self.dtype).eval()
        self.channels_last = (torch.device(self.device).type == "cuda") if channels_last is None else channels_last
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        c = self.config
        memory = MemoryConfig(top_k=c.top_k, min_mid_term_frames=c.min_mid_term_frames,
                              max_mid_term_frames=c.max_mid_term_frames, num_prototypes=c.num_prototypes,
                              max_long_term_elements=c.max_long_term_elements)
        is_cuda = torch.device(self.device).type == "cuda"
        self.cuda_graphs = is_cuda if cuda_graphs is None else bool(cuda_graphs)
        self.pad_key_batch = self.cuda_graphs if pad_key_batch is None else bool(pad_key_batch)
        self.core = InferenceCore(network, InferenceConfig(mem_every=c.mem_every, short_side=c.short_side,
                                                           memory=memory), cuda_graphs=self.cuda_graphs)
        self.last_stats: dict[str, float] = {}

    def _upload(self, frames, geometry, pad: bool = False):
        """uint8 (B, H, W, 3) on the host (array or tensor) -> prepared images (B', 3, Hp, Wp) on the
        device; ``pad``: B' = ``key_batch`` (a shorter batch is padded by repeating its last frame)."""
        import torch

        from videoseg_r1.segmentation.xmem.inference import prepare_images

        t = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
        if torch.device(self.device).type == "cuda":
            if not t.is_pinned():
                t = t.pin_memory()
            t = t.to(self.device, non_blocking=True)
        else:
            t = t.to(self.device)
        if pad and t.shape[0] < self.key_batch:  # repeat the last frame; its encodings are dropped
            t = torch.cat([t, t[-1:].expand(self.key_batch - t.shape[0], *t.shape[1:])])
        images = prepare_images(t, geometry, self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _run(self, state, video: Video, start: int, stop: int, step: int, geometry, emitter: _MaskEmitter,
             out_hw: tuple[int, int]) -> Iterator[tuple[int, Masks]]:
        import torch

        from videoseg_r1.segmentation.xmem.inference import probabilities_to_labels

        last = stop - step
        pin = torch.device(self.device).type == "cuda"
        for indices, frames in _ChunkPrefetcher(video, start, stop, step, self.key_batch, pin=pin):
            feats = self.core.encode_frames(self._upload(frames, geometry, pad=self.pad_key_batch))
            for frame_idx, feat in zip(indices, feats):
                prob = self.core.step(state, feat, end=frame_idx == last)
                labels = probabilities_to_labels(prob, geometry, out_hw)
                yield from emitter.push(frame_idx, labels)
            del feats
        yield from emitter.flush()

    def propagate(self, video: Video, key_frame_idx: int, key_masks: Mapping[int, np.ndarray]
                  ) -> Iterator[tuple[int, Masks]]:
        """Yield (frame_idx, {obj_id: (H, W) bool}) for every frame: key, forward, backward."""
        import torch

        from videoseg_r1.segmentation.xmem.inference import make_geometry, prepare_masks

        masks = check_key_masks(video, key_frame_idx, key_masks)
        num_frames = len(video)
        t0, processed = time.perf_counter(), 0
        if not masks:  # nothing to track: every frame is empty
            for frame_idx in propagation_order(num_frames, key_frame_idx):
                yield frame_idx, {}
            return
        obj_ids = list(masks)
        out_hw = (video.height, video.width)
        geometry = make_geometry(video.height, video.width, self.config.short_side)
        if torch.device(self.device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        # the key frame: encoded once, its memory state shared by both directions
        key_images = self._upload(np.stack(video.get_frames([key_frame_idx])), geometry)
        key_feat = self.core.encode_frames(key_images)[0]
        mask_t = prepare_masks(torch.from_numpy(np.stack([masks[o] for o in obj_ids])).to(self.device), geometry)
        state = self.core.new_state(len(obj_ids))
        self.core.step(state, key_feat, mask=mask_t, end=False)
        del key_feat, key_images
        backward_state = state.clone() if self.directions in ("both", "backward") else None
        yield key_frame_idx, {obj: masks[obj].copy() for obj in obj_ids}
        emitter = _MaskEmitter(obj_ids, self.device, self.output_lag)
        if self.directions in ("both", "forward") and key_frame_idx + 1 < num_frames:
            for item in self._run(state, video, key_frame_idx + 1, num_frames, 1, geometry, emitter, out_hw):
                processed += 1
                yield item
        state = None
        if backward_state is not None and key_frame_idx > 0:
            for item in self._run(backward_state, video, key_frame_idx - 1, -1, -1, geometry, emitter, out_hw):
                processed += 1
                yield item
        seconds = time.perf_counter() - t0
        self.last_stats = {"frames": float(processed + 1), "seconds": seconds,
                           "frames_per_second": (processed + 1) / max(seconds, 1e-9)}
        if torch.device(self.device).type == "cuda":
            self.last_stats["peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20


def make_propagator(config: PropagatorConfig | None = None, **kwargs) -> Propagator:
    """Build the propagator the config names: "xmem" (default) or "sam2_video"."""
    config = config or PropagatorConfig()
    if config.backend == "xmem":
        return XMemPropagator(config=config, **kwargs)
    if config.backend == "sam2_video":
        from videoseg_r1.segmentation.sam2_video import Sam2VideoPropagator

        return Sam2VideoPropagator(config=config, **kwargs)
    raise ValueError(f"unknown propagator backend {config.backend!r}; choose 'xmem' or 'sam2_video'")
