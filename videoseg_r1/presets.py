"""Named presets: a short name (``--preset synthetic-small``) that stands for a set of model files and
the pipeline settings that suit them.

Used by ``cli_common.config_from_args`` (hence ``segment``, ``predict`` and ``demo``). A preset's
models live in ``<models root>/<preset name>/`` with a fixed layout (``reasoner/`` and ``sam2/``
hub-style folders, ``xmem.safetensors`` or ``xmem.pth``). The models root is looked up, in order:

1. ``$VIDEOSEG_R1_MODELS`` when set (e.g. ``VIDEOSEG_R1_MODELS=/data/models`` ->
   ``/data/models/synthetic-small/reasoner``);
2. ``models/`` of the repository checkout next to the package (``<repo>/models/synthetic-small/...``).

A missing model is one clear error naming every path tried and the command that trains it.
Explicit flags (``--reasoner``, ``--sam2``, ``--xmem``, ``--short-side``, ...) override a preset,
and a model given by flag is not looked up at all.

    >>> from videoseg_r1.presets import preset_config
    >>> cfg = preset_config("synthetic-small")        # doctest: +SKIP
    >>> cfg.reasoner.model                            # doctest: +SKIP
    '/path/to/repo/models/synthetic-small/reasoner'
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MODELS_ENV = "VIDEOSEG_R1_MODELS"
DEFAULT_PRESET = "synthetic-small"  # what ``videoseg-r1 demo`` uses when no model is named

# component -> config attributes that receive the resolved path
_COMPONENTS = ("reasoner", "sam2", "xmem")


@dataclass(frozen=True)
class Preset:
    """One preset: where its model files are (relative to ``<models root>/<name>/``), how each is
    trained, and the pipeline settings that fit the models (a function of a fresh PipelineConfig)."""

    name: str
    description: str
    # component -> candidate file/folder names inside the preset folder, first match wins
    files: dict[str, tuple[str, ...]]
    train_commands: dict[str, str]
    settings: Callable  # (PipelineConfig) -> PipelineConfig
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- synthetic-small
# Settings chosen for the small models trained on the synthetic benchmark (320x240 videos, 10 fps,
# 32 frames in training) and for CPU inference on 2 cores (the demo's < 60 s target).
SMALL_MODEL_INPUT_SIZE = 224  # = data.samples.model_input_size of configs/{sft,grpo}_small_synthetic.yaml:
#   the reasoner only ever saw 224x224 target frames; 840 would cost 14x the visual tokens for nothing
SMALL_CONTEXT_FRAME_SIZE = 112  # = data.samples.context_frame_size of the same configs
SMALL_NUM_KEY_FRAMES = 2  # = data.samples.num_key_frames (the reasoning prompt's layout as trained)
SMALL_NUM_REFERENCE_FRAMES = 2  # = data.samples.num_reference_frames
SMALL_MAX_NEW_TOKENS = 192  # = GRPO max_completion_length of the small run: the longest answer the
#   model was trained to give; bounds CPU decoding time (512 by default)
SMALL_HTFS_FRAME_SIZE = 112  # HTFS frames at the context-frame size (448 by default): 4x4 merged
#   patches per frame pair instead of 16x16, which keeps the interval/position prompts short on a CPU
SMALL_HTFS_MAX_FRAMES_SHOWN = 16  # half of the 32 frames of a synthetic training video (32 by default)
SMALL_HTFS_INTERVAL_SAMPLES = 5  # K unchanged: the K answers share one batched generate call, cheap
SMALL_HTFS_POSITION_SAMPLES = 5  # unchanged (M = 3 of them averaged), same reason
SMALL_HTFS_MAX_ROUNDS = 2  # 3 by default: a 32-64 frame video needs at most 2 halvings to reach δ·T
SMALL_HTFS_AS_VIDEO = False  # the small reasoner learned the HTFS prompts with frames as separate images
#   (TRL's image column; configs/sft_small_synthetic.yaml data.samples.tasks), so it is asked that way
SMALL_SHORT_SIDE = 128  # propagation at the small XMem's training scale (scripts/train_small_xmem.py
#   trains on 160x128 synthetic clips, shapes sized relative to the frame): a 320x240 video is
#   propagated at 171x128, the same object scale, and 3.5x cheaper than the native 240 (480, the
#   official default, would upsample 2x); masks are resized back to the video's size


def _synthetic_small_settings(cfg):
    r = dataclasses.replace(cfg.reasoner, model_input_size=SMALL_MODEL_INPUT_SIZE,
                            context_frame_size=SMALL_CONTEXT_FRAME_SIZE, max_new_tokens=SMALL_MAX_NEW_TOKENS)
    s = dataclasses.replace(cfg.sampler, frame_size=SMALL_HTFS_FRAME_SIZE, max_frames_shown=SMALL_HTFS_MAX_FRAMES_SHOWN,
                            num_interval_samples=SMALL_HTFS_INTERVAL_SAMPLES,
                            num_position_samples=SMALL_HTFS_POSITION_SAMPLES, max_rounds=SMALL_HTFS_MAX_ROUNDS,
                            as_video=SMALL_HTFS_AS_VIDEO,
                            num_key_frames=SMALL_NUM_KEY_FRAMES, num_reference_frames=SMALL_NUM_REFERENCE_FRAMES)
    p = dataclasses.replace(cfg.propagator, backend="xmem", short_side=SMALL_SHORT_SIDE)
    return dataclasses.replace(cfg, reasoner=r, sampler=s, propagator=p)


PRESETS: dict[str, Preset] = {
    "synthetic-small": Preset(
        name="synthetic-small",
        description="small Qwen2.5-VL reasoner (SFT + GRPO), small SAM2 and small XMem trained on the "
                    "synthetic benchmark; runs on a CPU",
        files={"reasoner": ("reasoner",), "sam2": ("sam2",), "xmem": ("xmem.safetensors", "xmem.pth")},
        train_commands={
            "reasoner": "python scripts/train_small_reasoner.py --out runs/small_reasoner --init --layers 4 "
                        "--ship {dest}/reasoner",
            "sam2": "python scripts/train_small_sam2.py --out runs/small_sam2 "
                    "(then copy runs/small_sam2/final to {dest}/sam2)",
            "xmem": "python scripts/train_small_xmem.py --out runs/small_xmem "
                    "(then copy runs/small_xmem/final/xmem.safetensors to {dest}/xmem.safetensors)",
        },
        settings=_synthetic_small_settings,
    ),
}


class PresetError(FileNotFoundError):
    """A preset's model files are missing (the message lists the paths tried and the fix)."""


def repo_models_dir() -> Path:
    """``<repo>/models``: the folder next to the package in a source checkout."""
    return Path(__file__).resolve().parent.parent / "models"


def models_roots() -> list[Path]:
    """Where preset folders are looked up, in order."""
    roots = []
    env = os.environ.get(MODELS_ENV, "").strip()
    if env:
        roots.append(Path(env).expanduser())
    roots.append(repo_models_dir())
    return roots


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def _exists(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir()) if not path.suffix else path.is_file()


def resolve_models(name: str, components=_COMPONENTS) -> dict[str, Path]:
    """{component: path} of a preset's model files, for the components asked; a clear
    ``PresetError`` listing every path tried (and how to train the missing models) otherwise."""
    preset = get_preset(name)
    found: dict[str, Path] = {}
    tried: dict[str, list[Path]] = {}
    for comp in components:
        tried[comp] = []
        for root in models_roots():
            for fname in preset.files[comp]:
                path = root / preset.name / fname
                tried[comp].append(path)
                if _exists(path):
                    found[comp] = path
                    break
            if comp in found:
                break
    missing = [c for c in components if c not in found]
    if missing:
        dest = (models_roots()[0] / preset.name)
        lines = [f"preset {name!r}: model files not found ({', '.join(missing)})."]
        for comp in missing:
            lines.append(f"  {comp}: tried " + ", ".join(str(p) for p in tried[comp]))
        lines.append(f"Train them (see models/README.md) or point ${MODELS_ENV} at a folder holding "
                     f"{preset.name}/ (or pass --reasoner/--sam2/--xmem):")
        for comp in missing:
            lines.append("  " + preset.train_commands[comp].format(dest=dest))
        raise PresetError("\n".join(lines))
    return found


def preset_config(name: str, base=None, skip: tuple[str, ...] = ()):
    """A ``PipelineConfig`` with the preset's settings and model paths filled in.

    ``base``: the config to start from (default ``PipelineConfig()``); ``skip``: components given
    explicitly elsewhere (not looked up, so they need not exist).
    """
    from videoseg_r1.config import PipelineConfig

    preset = get_preset(name)
    cfg = preset.settings(base if base is not None else PipelineConfig())
    paths = resolve_models(name, tuple(c for c in _COMPONENTS if c not in skip))
    r, s, pr = cfg.reasoner, cfg.segmenter, cfg.propagator
    if "reasoner" in paths:
        r = dataclasses.replace(r, model=str(paths["reasoner"]))
    if "sam2" in paths:
        s = dataclasses.replace(s, model=str(paths["sam2"]))
        pr = dataclasses.replace(pr, sam2_video_model=str(paths["sam2"]))
    if "xmem" in paths:
        pr = dataclasses.replace(pr, checkpoint=str(paths["xmem"]))
    return dataclasses.replace(cfg, reasoner=r, segmenter=s, propagator=pr)
