"""XMem inference core: a per-frame ``step()`` over a typed state (sensory + working + long-term memory).

Called by :class:`videoseg_r1.segmentation.propagation.XMemPropagator`, once per direction. Key
encodings are computed outside ``step`` (``encode_frames``) because they do not depend on memory: the
propagator encodes a batch of upcoming frames at once, and the key frame once for both directions.

Follows the official ``InferenceCore`` (hkchengrex/XMem) with its evaluation defaults: a memory
frame every ``mem_every`` frames and whenever a mask is given, deep update of the sensory memory
synchronised with memory frames, no memory write and no sensory update on the last frame.

Shapes: B frames, N objects, (H, W) padded processing size (multiple of 16), (h, w) = (H, W) / 16.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from videoseg_r1.config import XMEM_MEM_EVERY, XMEM_SHORT_SIDE
from videoseg_r1.segmentation.xmem.graphs import GraphedCallable
from videoseg_r1.segmentation.xmem.memory import MemoryConfig, MemoryManager, query_augment
from videoseg_r1.segmentation.xmem.network import XMem, aggregate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InferenceConfig:
    """Loop settings (official evaluation defaults) plus the memory sizes."""

    mem_every: int = XMEM_MEM_EVERY
    short_side: int | None = XMEM_SHORT_SIDE  # None / <= 0: process at the input size
    memory: MemoryConfig = field(default_factory=MemoryConfig)


@dataclass
class FrameFeatures:
    """Everything ``step`` needs from one frame, computed without memory (all batch 1).

    image (1, 3, H, W) normalised; key (1, Ck, h, w); shrinkage (1, 1, h, w); selection (1, Ck, h, w);
    f16 (1, C16, h, w), f8 (1, C8, 2h, 2w), f4 (1, C4, 4h, 4w); query_aug (1, h*w, 2Ck+1) float32 or
    None (the query side of the affinity, :func:`~videoseg_r1.segmentation.xmem.memory.query_augment`).
    """

    image: torch.Tensor
    key: torch.Tensor
    shrinkage: torch.Tensor
    selection: torch.Tensor
    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor
    query_aug: torch.Tensor | None = None


@dataclass
class XMemState:
    """The tracking state of one direction: frame counter, memories and sensory memory.

    ``hidden`` is the sensory memory (1, N, Ch, h, w); ``frame_count`` counts frames seen (the key
    frame is 0); ``last_mem_frame`` is the frame_count of the latest memory frame.
    """

    num_objects: int
    memory: MemoryManager
    hidden: torch.Tensor | None = None
    frame_count: int = -1
    last_mem_frame: int = 0

    def clone(self) -> "XMemState":
        """Independent copy (used to start the backward pass from the key-frame state)."""
        return XMemState(self.num_objects, self.memory.clone(),
                         None if self.hidden is None else self.hidden.clone(), self.frame_count, self.last_mem_frame)


# ------------------------------------------------------------------------------------- pre/post


@dataclass(frozen=True)
class Geometry:
    """Input size (H_in, W_in) -> resized (H_r, W_r) -> padded to a multiple of 16 (H, W)."""

    in_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    pad_ltrb: tuple[int, int, int, int]  # left, top, right, bottom

    @property
    def torch_pad(self) -> tuple[int, int, int, int]:
        """The padding in ``F.pad`` order (left, right, top, bottom)."""
        l, t, r, b = self.pad_ltrb
        return l, r, t, b

    @property
    def padded_hw(self) -> tuple[int, int]:
        (h, w), (l, t, r, b) = self.resized_hw, self.pad_ltrb
        return h + t + b, w + l + r


def make_geometry(height: int, width: int, short_side: int | None) -> Geometry:
    """Shorter side -> ``short_side`` (longer side truncated, as torchvision's Resize), then centred
    zero padding to a multiple of 16 (the official ``pad_divide_by``)."""
    if short_side and short_side > 0:
        if height <= width:
            rh, rw = short_side, int(short_side * width / height)
        else:
            rh, rw = int(short_side * height / width), short_side
    else:
        rh, rw = height, width
    ph, pw = (-rh) % 16, (-rw) % 16
    return Geometry((height, width), (rh, rw), (pw // 2, ph // 2, pw - pw // 2, ph - ph // 2))


_NORMALISATION: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std (1, 3, 1, 1) on ``device``, made once: building them per call copies
    from pageable host memory, which blocks the host until the GPU has drained its queue."""
    if device not in _NORMALISATION:
        _NORMALISATION[device] = (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
                                  torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))
    return _NORMALISATION[device]


def prepare_images(frames_u8: torch.Tensor, geometry: Geometry, dtype: torch.dtype) -> torch.Tensor:
    """frames (B, H_in, W_in, 3) uint8 on the device -> (B, 3, H, W) normalised, resized, padded."""
    x = frames_u8.permute(0, 3, 1, 2).float().div_(255.0)
    mean, std = _normalisation(x.device)
    x = (x - mean) / std
    if tuple(x.shape[-2:]) != geometry.resized_hw:
        down = geometry.resized_hw[0] < x.shape[-2]
        x = F.interpolate(x, size=geometry.resized_hw, mode="bilinear", align_corners=False, antialias=down)
    x = F.pad(x, geometry.torch_pad)
    return x.to(dtype)


def prepare_masks(masks: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """masks (N, H_in, W_in) bool/float -> (N, H, W) float32 (nearest resize, as the official loader)."""
    m = masks.float()
    if tuple(m.shape[-2:]) != geometry.resized_hw:
        m = F.interpolate(m[None], size=geometry.resized_hw, mode="nearest")[0]
    return F.pad(m, geometry.torch_pad)


def probabilities_to_labels(prob_with_bg: torch.Tensor, geometry: Geometry,
                            out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """prob (N+1, H, W) padded -> label map (H_out, W_out) uint8 (0 = background, i = object i):
    unpad, bilinear resize of the probabilities to the output size, argmax."""
    l, t, r, b = geometry.pad_ltrb
    h, w = geometry.resized_hw
    p = prob_with_bg[:, t:t + h, l:l + w]
    out_hw = out_hw or geometry.in_hw
    if tuple(p.shape[-2:]) != tuple(out_hw):
        p = F.interpolate(p[None].float(), size=out_hw, mode="bilinear", align_corners=False)[0]
    return p.argmax(0).to(torch.uint8)


# ------------------------------------------------------------------------------------- core


# -- the fixed-shape parts of a step (graph-captured on CUDA when InferenceCore's cuda_graphs is on)


def _encode_key_fn(network: XMem, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    key, shrinkage, selection, f16, f8, f4 = network.encode_key(images)
    return key, shrinkage, selection, f16, f8, f4, query_augment(key, selection)


def _encode_value_fn(network: XMem, image: torch.Tensor, f16: torch.Tensor, hidden: torch.Tensor | None,
                     masks: torch.Tensor, deep_update: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    return network.encode_value(image, f16, hidden, masks, deep_update=deep_update)


def _segment_fn(network: XMem, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, readout: torch.Tensor,
                hidden: torch.Tensor | None, update_hidden: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    hidden, _, prob = network.segment(f16, f8, f4, readout, hidden, update_hidden=update_hidden)
    return hidden, prob


class InferenceCore:
    """Runs the XMem network over a stream of frames for one state at a time.

    ``cuda_graphs``: replay the fixed-shape parts (key encoder, value encoder, decoder with the soft
    aggregation) from CUDA graphs captured on first use (:mod:`.graphs`); only has an effect on CUDA
    tensors. ``graph_capture=False`` runs those parts through the same static buffers without
    capturing (for tests on the CPU).
    """

    def __init__(self, network: XMem, config: InferenceConfig | None = None, *, cuda_graphs: bool = False,
                 graph_capture: bool = True):
        self.network = network
        self.config = config or InferenceConfig()
        opts = dict(enabled=cuda_graphs, capture=graph_capture)
        # partials of module-level functions, not bound methods: no reference cycle through the core,
        # so a dropped core frees its graphs' GPU memory at once
        self.graphed_key = GraphedCallable(partial(_encode_key_fn, network), "xmem.encode_key", max_graphs=4, **opts)
        self.graphed_value = GraphedCallable(partial(_encode_value_fn, network), "xmem.encode_value", max_graphs=4,
                                             **opts)
        self.graphed_segment = GraphedCallable(partial(_segment_fn, network), "xmem.segment", max_graphs=8, **opts)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    @torch.inference_mode()
    def encode_frames(self, images: torch.Tensor) -> list[FrameFeatures]:
        """images (B, 3, H, W) prepared -> B FrameFeatures (one batched key-encoder pass)."""
        images = images.to(self.dtype)
        key, shrinkage, selection, f16, f8, f4, query_aug = self.graphed_key(images)
        return [FrameFeatures(images[i:i + 1], key[i:i + 1], shrinkage[i:i + 1], selection[i:i + 1],
                              f16[i:i + 1], f8[i:i + 1], f4[i:i + 1], query_aug[i:i + 1])
                for i in range(images.shape[0])]

    def new_state(self, num_objects: int) -> XMemState:
        return XMemState(num_objects=num_objects, memory=MemoryManager(self.config.memory))

    @torch.inference_mode()
    def step(self, state: XMemState, frame: FrameFeatures, mask: torch.Tensor | None = None,
             end: bool = False) -> torch.Tensor:
        """Process the next frame of ``state``'s direction.

        mask (N, H, W) in [0, 1] (padded processing size) replaces the prediction when given (all
        objects); the first frame of a state must have one. ``end`` marks the last frame (no memory
        write, no sensory update). Returns probabilities with background first, (N+1, H, W) float32.
        """
        net = self.network
        state.frame_count += 1
        first = state.frame_count == 0
        if first and mask is None:
            raise ValueError("the first frame of an XMem state needs a mask")
        is_mem_frame = (state.frame_count - state.last_mem_frame >= self.config.mem_every or mask is not None) and not end
        deep_update = is_mem_frame  # official default deep_update_every = -1: synchronised with memory frames
        normal_update = not deep_update and not end
        dtype = self.dtype
        n = state.num_objects
        prob = None
        if not first:
            query_aug = None if frame.query_aug is None else frame.query_aug[0]
            readout = state.memory.match(frame.key[0], frame.selection[0], n, query_aug).unsqueeze(0).to(dtype)
            hidden, prob_b = self.graphed_segment(frame.f16, frame.f8, frame.f4, readout, state.hidden,
                                                  normal_update)
            prob = prob_b[0]
            if normal_update:
                state.hidden = hidden
        if mask is not None:
            _, prob_b = aggregate(mask.float().unsqueeze(0), dim=1)
            prob = prob_b[0]
            if state.hidden is None:
                h, w = frame.key.shape[-2:]
                state.hidden = torch.zeros(1, n, net.hidden_dim, h, w, device=frame.key.device, dtype=dtype)
        if is_mem_frame:
            value, hidden = self.graphed_value(frame.image.to(dtype), frame.f16, state.hidden,
                                               prob[1:].unsqueeze(0).to(dtype), deep_update)
            state.memory.add(frame.key[0], frame.shrinkage[0], value[0], frame.selection[0])
            state.last_mem_frame = state.frame_count
            if deep_update and hidden is not None:
                state.hidden = hidden
        return prob
