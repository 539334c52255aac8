"""SAM2 key-frame segmentation: one mask per object from the reasoner's box + positive point + negative point.

Called by the pipeline on the target frame chosen by HTFS (SPEC §1 stage 3), before propagation.
Uses transformers' ``Sam2Model`` / ``Sam2Processor`` (default ``facebook/sam2.1-hiera-large``; any
size, or a local folder, loads). The image is encoded once; all objects whose prompts have the same
structure (box or not, number of points) go through the mask decoder in one batched call, so the
usual case (every object has box + 2 points) is a single call. Of SAM2's multimask candidates the
one with the highest predicted IoU is kept. Masks come back at the frame's own resolution.

An object whose prompt has no usable box and no positive point (malformed answer, or removed by the
``use_box`` / ``use_positive_point`` / ``use_negative_point`` ablation flags) gets no mask; the result
says why, for the trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from videoseg_r1.config import SegmenterConfig, resolve_device, resolve_dtype
from videoseg_r1.types import ObjectPrompt


@dataclass
class KeyFrameResult:
    """Masks of one key frame, keyed by ``ObjectPrompt.obj_idx``.

    ``masks[obj]`` is (H, W) bool; ``scores[obj]`` SAM2's predicted IoU of the kept candidate;
    ``errors[obj]`` says why an object got no mask (it is then absent from ``masks``)."""

    masks: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line per object without a mask, for ``Trace.notes``."""
        return [f"object {obj}: no mask ({reason})" for obj, reason in sorted(self.errors.items())]


@dataclass(frozen=True)
class _SamPrompt:
    obj_idx: int
    box_xyxy: tuple[float, float, float, float] | None
    points_xy: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]

    @property
    def signature(self) -> tuple[bool, int]:
        return self.box_xyxy is not None, len(self.points_xy)


def _finite(values) -> bool:
    return all(isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v)) for v in values)


def build_sam_prompt(prompt: ObjectPrompt, config: SegmenterConfig) -> _SamPrompt | str:
    """Apply the ablation flags to one ObjectPrompt; return the SAM2 prompt or the reason there is none."""
    box = None
    if config.use_box and prompt.box_xyxy is not None:
        if len(prompt.box_xyxy) == 4 and _finite(prompt.box_xyxy):
            box = tuple(float(v) for v in prompt.box_xyxy)
    points, labels = [], []
    for xy, label in zip(prompt.points_xy, prompt.labels):
        keep = (label == 1 and config.use_positive_point) or (label == 0 and config.use_negative_point)
        if keep and len(xy) == 2 and _finite(xy):
            points.append((float(xy[0]), float(xy[1])))
            labels.append(int(label))
    if box is None and 1 not in labels:
        if prompt.error:
            return prompt.error
        used = [name for name, on in (("box", config.use_box), ("positive point", config.use_positive_point)) if on]
        return f"no usable {' or '.join(used) or 'prompt (box and positive point disabled)'} for SAM2"
    return _SamPrompt(prompt.obj_idx, box, tuple(points), tuple(labels))


class KeyFrameSegmenter:
    """SAM2 image segmentation of the key frame from per-object prompts.

    ``model`` / ``processor`` may be given directly (tests pass tiny ones); otherwise they load from
    ``config.model`` (hub id or local folder) without network access when HF_HUB_OFFLINE=1.
    """

    def __init__(self, config: SegmenterConfig | None = None, *, model=None, processor=None,
                 device: str | None = None, dtype: str | None = None):
        import torch

        self.config = config or SegmenterConfig()
        self.device = resolve_device(device or self.config.device)
        self.dtype = resolve_dtype(dtype or self.config.dtype, self.device)
        if model is None or processor is None:
            model, processor = load_sam2(self.config.model, self.dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        self._torch = torch

    def segment(self, frame: np.ndarray, prompts: Sequence[ObjectPrompt]) -> KeyFrameResult:
        """frame (H, W, 3) uint8 RGB; one ObjectPrompt per object -> masks (H, W) bool per object."""
        torch = self._torch
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"key frame must be an RGB array (H, W, 3), got shape {frame.shape}")
        result = KeyFrameResult()
        groups: dict[tuple[bool, int], list[_SamPrompt]] = {}
        for prompt in prompts:
            sam = build_sam_prompt(prompt, self.config)
            if isinstance(sam, str):
                result.errors[prompt.obj_idx] = sam
            else:
                groups.setdefault(sam.signature, []).append(sam)
        if not groups:
            return result
        h, w = frame.shape[:2]
        with torch.inference_mode():
            inputs = self.processor(images=frame, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
            embeddings = self.model.get_image_embeddings(pixel_values)  # encoded once for all objects
            for (has_box, num_points), group in groups.items():
                kwargs = {}
                if has_box:
                    kwargs["input_boxes"] = [[list(p.box_xyxy) for p in group]]
                if num_points:
                    kwargs["input_points"] = [[[list(xy) for xy in p.points_xy] for p in group]]
                    kwargs["input_labels"] = [[list(p.labels) for p in group]]
                enc = self.processor(original_sizes=[[h, w]], return_tensors="pt", **kwargs)
                model_kwargs = {k: enc[k].to(self.device) for k in ("input_boxes", "input_points", "input_labels")
                                if k in enc}
                for k in ("input_boxes", "input_points"):
                    if k in model_kwargs:
                        model_kwargs[k] = model_kwargs[k].to(self.dtype)
                out = self.model(image_embeddings=embeddings, multimask_output=True, **model_kwargs)
                scores = out.iou_scores[0].float()  # (n_obj, n_candidates)
                best = scores.argmax(-1)
                low_res = out.pred_masks[0][torch.arange(len(group)), best]  # (n_obj, h_low, w_low)
                masks = self.processor.post_process_masks([low_res[None].float().cpu()], [[h, w]])[0][0]
                for i, p in enumerate(group):
                    result.masks[p.obj_idx] = masks[i].numpy().astype(bool)
                    result.scores[p.obj_idx] = float(scores[i, best[i]])
        return result


def load_sam2(model_id: str, dtype=None):
    """Load ``Sam2Model`` + ``Sam2Processor`` from a hub id or folder; a clear error when the weights
    are not available (offline and not cached, or a wrong id)."""
    try:
        from transformers import Sam2Model, Sam2Processor
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise ImportError(f"SAM2 needs transformers with Sam2Model ({exc}); pip install -U transformers") from None
    try:
        processor = Sam2Processor.from_pretrained(model_id)
        model = Sam2Model.from_pretrained(model_id, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"SAM2 weights {model_id!r} are not available ({type(exc).__name__}: offline and not cached, or not "
            f"a SAM2 model id/folder). With HF_HUB_OFFLINE=1 they must already be in the Hugging Face cache (download once with "
            f"`huggingface-cli download {model_id}`), or set segmenter.model to a local folder.") from None
    return model, processor
