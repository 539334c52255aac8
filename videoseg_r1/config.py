"""Typed configuration of the whole system; YAML files under ``configs/`` only fill these in.

Every default the paper does not give is a named constant below with a comment saying so
(SPEC.md §1-§2). The pipeline, the CLI and the trainers all read these dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- model ids (real hub ids)
DEFAULT_REASONER_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_SAM2_ID = "facebook/sam2.1-hiera-large"
# Official XMem release file (hkchengrex/XMem, release v1.0).
DEFAULT_XMEM_URL = "https://github.com/hkchengrex/XMem/releases/download/v1.0/XMem.pth"

# ---------------------------------------------------------------- stage 1: HTFS (our defaults)
HTFS_NUM_INTERVAL_SAMPLES = 5  # K: paper silent; ours
HTFS_DELTA = 0.5  # δ: compress while T_key > δ·T; paper silent; ours
HTFS_MAX_ROUNDS = 3  # guard on semantic-compression rounds; ours
HTFS_NUM_POSITION_SAMPLES = 5  # position answers drawn; ours
HTFS_TOP_M = 3  # M: best position answers (by log-likelihood) averaged; ours
HTFS_NUM_REFERENCE_FRAMES = 4  # global-context frames; ours
HTFS_MAX_FRAMES_SHOWN = 32  # frames shown to the video LLM, with timestamps; ours
HTFS_TEMPERATURE = 1.0  # sampling temperature of interval/position answers; ours
HTFS_FRAME_SIZE = 448  # frames shown to the video LLM are resized to this square size; ours
HTFS_INTERVAL_MAX_NEW_TOKENS = 32  # an interval answer is short; ours
HTFS_POSITION_MAX_NEW_TOKENS = 16  # a position answer is short; ours
HTFS_NUM_KEY_FRAMES = 4  # key-segment frames (besides the target) shown to the reasoning model; ours

# ---------------------------------------------------------------- stage 2: reasoning
MODEL_INPUT_SIZE = 840  # VisionReasoner's convention: target frame resized to 840x840
# The Qwen2-VL / Qwen2.5-VL processors resize every image side to a multiple of patch 14 x spatial
# merge 2 = 28 px. The target frame's size is written into the prompt and the coordinate map, so it
# must be one the processor keeps (SPEC §1): an 800 px frame would be fed as 812 px and every
# coordinate read back 1.5 % off. (Qwen3-VL's grid is 32 px, but it answers in 0-1000 normalised
# coordinates, which do not depend on the pixel size.)
VISION_GRID_PX = 28
REASONING_MAX_NEW_TOKENS = 512  # ours
REASONER_VISION_CACHE_UNITS = 256  # cached visual units (images / 2-frame video patches); ours
REASONING_CONTEXT_FRAME_SIZE = 448  # key/reference frames shown before the 840x840 target; ours

# ---------------------------------------------------------------- stage 3: XMem (official defaults)
XMEM_MEM_EVERY = 5
XMEM_MIN_MID_TERM_FRAMES = 5
XMEM_MAX_MID_TERM_FRAMES = 10
XMEM_NUM_PROTOTYPES = 128
XMEM_MAX_LONG_TERM_ELEMENTS = 10000
XMEM_TOP_K = 30
XMEM_SHORT_SIDE = 480

# ---------------------------------------------------------------- training (SPEC §2)
GRPO_GROUP_SIZE = 8
GRPO_BATCH_SIZE = 16
GRPO_LR = 1e-6
GRPO_WEIGHT_DECAY = 0.01
GRPO_KL_BETA = 1e-2  # VisionReasoner's KL coefficient; configurable
GRPO_TEMPERATURE = 1.0
DIFFICULTY_TAU_EASY = 4.0  # D < τ_easy -> easy; paper silent; ours
DIFFICULTY_TAU_HARD = 7.0  # D >= τ_hard -> hard; paper silent; ours
LENGTH_BUDGET_EASY = 32  # reasoning tokens inside <think>; ours
LENGTH_BUDGET_MEDIUM = 64
LENGTH_BUDGET_HARD = 128
LENGTH_PENALTY_BETA = 0.01  # s = max(0, 1 - β·(L_used - L_budget)); ours
REWARD_THRESHOLD_REFERENCE_PX = 840  # the input size VisionReasoner's 10 / 30 / 40 px thresholds are meant for


def check_vision_grid_size(name: str, size_px: Any, grid_px: int = VISION_GRID_PX) -> int:
    """``size_px`` as an int if it is a positive multiple of ``grid_px``; else a ValueError naming the fix.

    >>> check_vision_grid_size("model_input_size", 840)
    840
    >>> check_vision_grid_size("model_input_size", 800)
    Traceback (most recent call last):
    ...
    ValueError: model_input_size 800 is not a multiple of 28 px (the vision grid of Qwen2.5-VL: patch 14 x merge 2): the processor would resize the frame to 812 px while the prompt and the coordinate map use 800, so every coordinate would be 1.5 % off. Use 784 or 812.
    """
    if isinstance(size_px, bool) or not isinstance(size_px, (int, float)) or size_px != int(size_px):
        raise ValueError(f"{name} must be a whole number of pixels, got {size_px!r}")
    size = int(size_px)
    if size < grid_px:
        raise ValueError(f"{name} {size} is smaller than the vision grid of {grid_px} px; use {grid_px} or more "
                         f"(a multiple of {grid_px}, e.g. 840)")
    if size % grid_px:
        snapped = max(grid_px, round(size / grid_px) * grid_px)
        lower = size // grid_px * grid_px
        raise ValueError(
            f"{name} {size} is not a multiple of {grid_px} px (the vision grid of Qwen2.5-VL: patch 14 x merge 2): "
            f"the processor would resize the frame to {snapped} px while the prompt and the coordinate map use "
            f"{size}, so every coordinate would be {100 * abs(snapped - size) / size:.1f} % off. "
            f"Use {lower} or {lower + grid_px}.")
    return size


@dataclass
class SamplerConfig:
    """Hierarchical Text-guided Frame Sampler (SPEC §1 stage 1)."""

    num_interval_samples: int = HTFS_NUM_INTERVAL_SAMPLES
    delta: float = HTFS_DELTA
    max_rounds: int = HTFS_MAX_ROUNDS
    num_position_samples: int = HTFS_NUM_POSITION_SAMPLES
    top_m: int = HTFS_TOP_M
    num_reference_frames: int = HTFS_NUM_REFERENCE_FRAMES
    max_frames_shown: int = HTFS_MAX_FRAMES_SHOWN
    temperature: float = HTFS_TEMPERATURE
    frame_size: int = HTFS_FRAME_SIZE
    interval_max_new_tokens: int = HTFS_INTERVAL_MAX_NEW_TOKENS
    position_max_new_tokens: int = HTFS_POSITION_MAX_NEW_TOKENS
    num_key_frames: int = HTFS_NUM_KEY_FRAMES
    as_video: bool = True  # frames as one video (Qwen2.5-VL's video input) or as images, each after its
    #   timestamp (the layout a model fine-tuned with TRL's image column learned: the small shipped one)
    model: str = ""  # the frozen stage-1 model that answers the HTFS prompts (SPEC §1): a hub id or folder;
    #   "" = the base the reasoner was trained from (its folder's videoseg_r1.json), else the reasoner;
    #   "reasoner" = the reasoner itself (model_settings.stage_one_model)


@dataclass
class ReasonerConfig:
    """The vision-language model used by HTFS and the reasoning step."""

    model: str = DEFAULT_REASONER_ID
    device: str = "auto"  # "auto" -> cuda if available else cpu
    dtype: str = "auto"  # "auto" -> bfloat16 on CUDA, float32 on CPU
    attn_implementation: str = "sdpa"
    device_map: str | None = None
    model_input_size: int = MODEL_INPUT_SIZE
    max_new_tokens: int = REASONING_MAX_NEW_TOKENS
    do_sample: bool = False  # reasoning step is greedy by default
    temperature: float = 1.0
    top_p: float = 1.0
    decode_engine: str = "auto"  # "auto" | "generate" | "static" (fast engine on CUDA)
    coordinates: str = "auto"  # how the answer's numbers are read: "absolute" (pixels of the model-input
    #   frame: Qwen2.5-VL) or "normalized_1000" (Qwen2-VL, Qwen3-VL); "auto" picks by model_type
    grouped_vision_attention: bool = True  # one SDPA per window size in the vision tower (same math)
    trust_remote_code: bool = False
    vision_cache_units: int = REASONER_VISION_CACHE_UNITS  # LRU bound of the vision-feature cache
    context_frame_size: int = REASONING_CONTEXT_FRAME_SIZE
    use_context_frames: bool = True  # False: target frame only (VisionReasoner's single-image input)

    def __post_init__(self):
        # the one place the size is checked: prompt, processor and CoordinateMap all use this value
        self.model_input_size = check_vision_grid_size("model_input_size", self.model_input_size)


@dataclass
class SegmenterConfig:
    """SAM2 key-frame segmentation (SPEC §1 stage 3)."""

    model: str = DEFAULT_SAM2_ID
    device: str = "auto"
    dtype: str = "auto"
    use_box: bool = True
    use_positive_point: bool = True
    use_negative_point: bool = True


@dataclass
class PropagatorConfig:
    """Mask propagation through the video (XMem by default, or SAM2 video)."""

    backend: str = "xmem"  # "xmem" | "sam2_video"
    checkpoint: str = DEFAULT_XMEM_URL
    device: str = "auto"
    dtype: str = "auto"
    short_side: int = XMEM_SHORT_SIDE
    mem_every: int = XMEM_MEM_EVERY
    min_mid_term_frames: int = XMEM_MIN_MID_TERM_FRAMES
    max_mid_term_frames: int = XMEM_MAX_MID_TERM_FRAMES
    num_prototypes: int = XMEM_NUM_PROTOTYPES
    max_long_term_elements: int = XMEM_MAX_LONG_TERM_ELEMENTS
    top_k: int = XMEM_TOP_K
    sam2_video_model: str = DEFAULT_SAM2_ID


@dataclass
class RewardConfig:
    """Reward thresholds and the difficulty-aware soft length penalty (SPEC §2)."""

    iou_threshold: float = 0.5
    # VisionReasoner's pixel thresholds, meant for an 840x840 input; with ``scale_thresholds`` each
    # is multiplied by sqrt(W*H) / threshold_reference_px of the sample's model-input frame (its
    # ``frame_size`` column), so a 224 px input asks for the same precision relative to the frame
    # (ours; at 840 nothing changes)
    box_l1_threshold_px: float = 10.0
    point_distance_threshold_px: float = 30.0
    negative_point_max_l1_px: float = 40.0
    scale_thresholds: bool = True
    threshold_reference_px: float = REWARD_THRESHOLD_REFERENCE_PX
    max_items: int = 120
    tau_easy: float = DIFFICULTY_TAU_EASY
    tau_hard: float = DIFFICULTY_TAU_HARD
    budget_easy: int = LENGTH_BUDGET_EASY
    budget_medium: int = LENGTH_BUDGET_MEDIUM
    budget_hard: int = LENGTH_BUDGET_HARD
    length_penalty_beta: float = LENGTH_PENALTY_BETA
    use_length_penalty: bool = True


    def for_frame(self, width: int, height: int) -> "RewardConfig":
        """These thresholds for a model-input frame of ``width`` x ``height`` pixels.

        >>> c = RewardConfig().for_frame(224, 224)
        >>> round(c.box_l1_threshold_px, 4), c.point_distance_threshold_px, round(c.negative_point_max_l1_px, 4)
        (2.6667, 8.0, 10.6667)
        >>> RewardConfig().for_frame(840, 840) == RewardConfig()
        True
        """
        if not self.scale_thresholds:
            return self
        scale = math.sqrt(float(width) * float(height)) / float(self.threshold_reference_px)
        if scale == 1.0:
            return self
        return dataclasses.replace(self, box_l1_threshold_px=self.box_l1_threshold_px * scale,
                                   point_distance_threshold_px=self.point_distance_threshold_px * scale,
                                   negative_point_max_l1_px=self.negative_point_max_l1_px * scale)


@dataclass
class PipelineConfig:
    """Everything the end-to-end pipeline needs."""

    reasoner: ReasonerConfig = field(default_factory=ReasonerConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    propagator: PropagatorConfig = field(default_factory=PropagatorConfig)
    seed: int = 0  # seeds a pipeline call's sampling (HTFS's K and M answers): the same call repeats


def _fill(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _fill(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Public helper: build any config dataclass from a (YAML-loaded) dict, strictly."""
    return _fill(cls, data, where)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5``)."""
    import re

    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return yaml.load(text, Loader=_Loader)


def load_config(path: str | Path, cls: type = PipelineConfig) -> Any:
    """Read a YAML file into ``cls``; a missing or malformed file gets a clear error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from None
    return _fill(cls, data, str(path))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without a GPU is a clear error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str):
    """'auto' -> bfloat16 on CUDA, float32 on CPU; otherwise a torch dtype by name."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(names)}")
    return names[dtype]
