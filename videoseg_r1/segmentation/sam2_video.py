"""SAM2-video propagation behind the :class:`~videoseg_r1.segmentation.propagation.Propagator` protocol.

The second backend (``PropagatorConfig.backend = "sam2_video"``): transformers' ``Sam2VideoModel``,
``Sam2VideoProcessor`` and a streaming ``Sam2VideoInferenceSession``. The key-frame masks are added
as mask inputs on the key frame (one conditioning output, computed once and used by both
directions), then frames are streamed forward to the end and, after dropping the forward frames'
memory, backward to the start. Frames are decoded in a background thread and fed one at a time;
the session's stored frames and per-frame outputs older than the memory window are dropped, so
memory stays flat on long videos (the stock session keeps every frame and output).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pathlib import Path

import numpy as np

from videoseg_r1.config import PropagatorConfig, resolve_device, resolve_dtype
from videoseg_r1.segmentation.propagation import (DEFAULT_KEY_BATCH, Masks, _ChunkPrefetcher, check_key_masks,
                                                  propagation_order)
from videoseg_r1.video import Video


def load_sam2_video(model_id: str, dtype=None):
    """``Sam2VideoModel`` + ``Sam2VideoProcessor`` from a hub id or folder, with a clear offline error."""
    from transformers import Sam2VideoModel, Sam2VideoProcessor

    folder = Path(str(model_id)).expanduser()
    _check_has_memory(folder)
    try:
        if folder.is_dir() and not (folder / "video_preprocessor_config.json").is_file():
            processor = _video_processor_from_image_processor(folder)
        else:
            processor = Sam2VideoProcessor.from_pretrained(model_id)
        model = Sam2VideoModel.from_pretrained(model_id, dtype=dtype)
    except (OSError, ValueError) as exc:
        if folder.is_dir():  # a local folder: its own problem, not the hub's
            raise RuntimeError(f"SAM2-video model folder {folder} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        raise RuntimeError(
            f"SAM2-video weights {model_id!r} are not available ({type(exc).__name__}: {exc}). Offline "
            f"(HF_HUB_OFFLINE=1) they must already be in the Hugging Face cache: download them once with "
            f"`hf download {model_id}`, or set --sam2 / propagator.sam2_video_model to a local folder.") from exc
    return model, processor


def _check_has_memory(folder: Path) -> None:
    """A local SAM2 folder without the video modules (memory attention and encoder) cannot
    propagate: they would be random. One clear error instead of a shape error deep in the model."""
    weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not weights:
        return
    from safetensors import safe_open

    keys = set()
    for path in weights:
        with safe_open(str(path), "pt") as f:
            keys.update(f.keys())
    if not any(k.startswith(("memory_attention.", "memory_encoder.")) for k in keys):
        raise RuntimeError(
            f"SAM2 folder {folder} holds an image model (no memory attention / memory encoder weights), so it cannot "
            f"propagate masks through a video; use --propagator xmem (the synthetic-small preset's), or give "
            f"--sam2 a SAM2 video checkpoint such as facebook/sam2.1-hiera-large")


def _video_processor_from_image_processor(folder: Path):
    """A ``Sam2VideoProcessor`` for a SAM2 folder saved with the image processor only (a
    ``Sam2Model`` folder, such as the shipped small SAM2): the video processor takes the image
    processor's resize, normalisation and mask size, so frames are prepared as that model was trained."""
    from transformers import Sam2Processor, Sam2VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    image = Sam2Processor.from_pretrained(folder)
    ip = image.image_processor
    video = Sam2VideoVideoProcessor(size=dict(ip.size), mask_size=dict(ip.mask_size), image_mean=ip.image_mean,
                                    image_std=ip.image_std, do_normalize=ip.do_normalize, do_rescale=ip.do_rescale,
                                    rescale_factor=ip.rescale_factor, do_resize=ip.do_resize)
    return Sam2VideoProcessor(ip, video, target_size=image.target_size, point_pad_value=image.point_pad_value)


class Sam2VideoPropagator:
    """SAM2 video propagation from key-frame masks, forward then backward, streamed."""

    def __init__(self, config: PropagatorConfig | None = None, *, model=None, processor=None,
                 device: str | None = None, dtype: str | None = None, directions: str = "both",
                 chunk: int = DEFAULT_KEY_BATCH):
        self.config = config or PropagatorConfig()
        self.device = resolve_device(device or self.config.device)
        self.dtype = resolve_dtype(dtype or self.config.dtype, self.device)
        if directions not in ("both", "forward", "backward"):
            raise ValueError(f"directions must be 'both', 'forward' or 'backward', got {directions!r}")
        self.directions = directions
        self.chunk = max(1, int(chunk))
        if model is None or processor is None:
            model, processor = load_sam2_video(self.config.sam2_video_model, self.dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        cfg = self.model.config
        # frames whose outputs memory attention may still read (mask memories, object pointers)
        self.window = max(int(cfg.num_maskmem), int(cfg.max_object_pointers_in_encoder)) + 1

    def _pixels(self, frames: np.ndarray):
        """uint8 (B, H, W, 3) -> (B, 3, S, S) on the device in the model dtype."""
        enc = self.processor(images=list(frames), return_tensors="pt")
        return enc["pixel_values"].to(self.device, self.dtype)

    def _to_masks(self, out, obj_ids: list[int], out_hw: tuple[int, int]) -> Masks:
        import torch

        order = {obj: i for i, obj in enumerate(out.object_ids)}
        logits = out.pred_masks.float()  # (N, 1, h, w)
        masks = torch.nn.functional.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False) > 0.0
        masks = masks[:, 0].cpu().numpy()
        return {obj: masks[order[obj]] for obj in obj_ids}

    def _prune(self, session, frame_idx: int, reverse: bool) -> None:
        """Drop the stored frame and non-conditioning outputs that memory can no longer reach."""
        if session.processed_frames is not None:
            session.processed_frames.pop(frame_idx, None)
        far = frame_idx + self.window if reverse else frame_idx - self.window
        for per_obj in session.output_dict_per_obj.values():
            per_obj["non_cond_frame_outputs"].pop(far, None)

    @staticmethod
    def _reset_direction(session) -> None:
        """Forget the tracked (non-conditioning) frames, keep the key frame's conditioning output."""
        for per_obj in session.output_dict_per_obj.values():
            per_obj["non_cond_frame_outputs"].clear()
        for tracked in session.frames_tracked_per_obj.values():
            tracked.clear()

    def _run(self, session, video: Video, start: int, stop: int, step: int, obj_ids, out_hw
             ) -> Iterator[tuple[int, Masks]]:
        import torch

        reverse = step < 0
        for indices, frames in _ChunkPrefetcher(video, start, stop, step, self.chunk):
            pixels = self._pixels(frames)
            for i, frame_idx in enumerate(indices):
                with torch.inference_mode():
                    out = self.model(inference_session=session, frame=pixels[i], frame_idx=frame_idx, reverse=reverse)
                masks = self._to_masks(out, obj_ids, out_hw)
                self._prune(session, frame_idx, reverse)
                yield frame_idx, masks

    def propagate(self, video: Video, key_frame_idx: int, key_masks: Mapping[int, np.ndarray]
                  ) -> Iterator[tuple[int, Masks]]:
        """Yield (frame_idx, {obj_id: (H, W) bool}) for every frame: key, forward, backward."""
        import torch

        masks = check_key_masks(video, key_frame_idx, key_masks)
        num_frames = len(video)
        if not masks:
            for frame_idx in propagation_order(num_frames, key_frame_idx):
                yield frame_idx, {}
            return
        obj_ids = list(masks)
        out_hw = (video.height, video.width)
        session = self.processor.init_video_session(inference_device=self.device, dtype=self.dtype)
        session.video_height, session.video_width = out_hw
        key_pixels = self._pixels(np.stack(video.get_frames([key_frame_idx])))
        self.processor.add_inputs_to_inference_session(
            session, frame_idx=key_frame_idx, obj_ids=list(obj_ids),  # the session consumes this list
            input_masks=[torch.from_numpy(masks[o]) for o in obj_ids])
        with torch.inference_mode():  # the conditioning output of the key frame, reused by both directions
            self.model(inference_session=session, frame=key_pixels[0], frame_idx=key_frame_idx)
        session.processed_frames.pop(key_frame_idx, None)
        yield key_frame_idx, {obj: masks[obj].copy() for obj in obj_ids}
        if self.directions in ("both", "forward") and key_frame_idx + 1 < num_frames:
            yield from self._run(session, video, key_frame_idx + 1, num_frames, 1, obj_ids, out_hw)
        if self.directions in ("both", "backward") and key_frame_idx > 0:
            self._reset_direction(session)
            yield from self._run(session, video, key_frame_idx - 1, -1, -1, obj_ids, out_hw)
