"""Inference settings that belong to a trained reasoner, saved in its folder (``videoseg_r1.json``).

A reasoner answers well only with the frame layout it was trained on: the target-frame size (its
coordinates are pixels of that frame), the context-frame size, how many key and reference frames it
saw, and, when it learned the HTFS prompts, their frame size, frame count and whether the frames
came as one video or as images. Training writes these next to the weights
(``training.job.save_for_inference``), with the model training started from (``base_model``: the
frozen stage-1 model of SPEC §1, followed back through earlier stages), so that
``videoseg-r1 segment --reasoner runs/x/final`` needs no other flag.

Order of precedence, lowest first: the built-in defaults (or a preset's), the settings of the
model folders, a ``--config`` file, command-line flags (``apply_model_settings(explicit=...)``).

    {"format": 1, "base_model": "../pretrain/final",
     "reasoner": {"model_input_size": 224, "context_frame_size": 112},
     "sampler": {"num_key_frames": 2, "num_reference_frames": 2,
                 "frame_size": 112, "max_frames_shown": 16, "as_video": false}}

``base_model`` is a hub id or a path relative to the folder that holds the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

SETTINGS_FILE = "videoseg_r1.json"
FORMAT = 1
REASONER_KEYS = ("model_input_size", "context_frame_size")
LAYOUT_KEYS = ("num_key_frames", "num_reference_frames")  # the reasoning step's context frames
HTFS_KEYS = ("frame_size", "max_frames_shown", "as_video")  # only for a model that learned HTFS
SAMPLER_MODEL_SELF = "reasoner"  # sampler.model value: HTFS asks the reasoner itself


class ModelSettingsError(ValueError):
    """A settings file that cannot be read (the message names the file)."""


def training_settings(sample_config, base_model: str | None, htfs_tasks: bool) -> dict[str, Any]:
    """The settings of a model trained on samples laid out by ``sample_config`` (a ``SampleConfig``)."""
    c = sample_config
    sampler: dict[str, Any] = {"num_key_frames": int(c.num_key_frames),
                               "num_reference_frames": int(c.num_reference_frames)}
    if htfs_tasks:  # training shows HTFS frames as separate images (TRL's image column)
        sampler.update(frame_size=int(c.htfs_frame_size), max_frames_shown=int(c.htfs_max_frames_shown),
                       as_video=False)
    return {"format": FORMAT, "base_model": base_model,
            "reasoner": {"model_input_size": int(c.model_input_size), "context_frame_size": int(c.context_frame_size)},
            "sampler": sampler}


def root_base_model(start_model: str) -> str:
    """The frozen stage-1 model of a run that starts from ``start_model``: that folder's own recorded
    base when it has one (an SFT or pretraining result), else ``start_model`` itself."""
    recorded = read_model_settings(start_model).get("base_model")
    return resolve_model_ref(recorded, start_model) if recorded else str(start_model)


def write_model_settings(folder: str | Path, settings: dict[str, Any]) -> Path:
    """Write ``settings`` to ``folder/videoseg_r1.json``; a local ``base_model`` is stored relative
    to the folder (the pair can be moved together)."""
    folder = Path(folder)
    settings = dict(settings)
    base = settings.get("base_model")
    if base and Path(base).exists():
        settings["base_model"] = os.path.relpath(Path(base).resolve(), folder.resolve())
    path = folder / SETTINGS_FILE
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(settings, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_model_settings(model: str | Path | None) -> dict[str, Any]:
    """The settings saved in a local model folder; {} for a hub id or a folder without them."""
    if not model:
        return {}
    path = Path(str(model)).expanduser() / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelSettingsError(f"model settings {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k, {}), dict) for k in ("reasoner", "sampler")):
        raise ModelSettingsError(f"model settings {path}: expected an object with 'reasoner' and 'sampler' objects")
    return data


def resolve_model_ref(ref: str, folder: str | Path) -> str:
    """``ref`` as recorded in ``folder``'s settings: a path relative to that folder, or a hub id."""
    if ref.startswith("~") or Path(ref).is_absolute():
        return str(Path(ref).expanduser())
    local = Path(folder).expanduser() / ref
    if ref.startswith(".") or local.exists():
        return str(local.resolve())
    return ref


def stage_one_model(reasoner_model: str, sampler_model: str | None) -> str:
    """Which model answers the HTFS prompts: ``sampler_model`` when given (``"reasoner"``: the
    reasoner itself); else the base recorded in the reasoner's folder, when it exists; else the
    reasoner. A recorded local base that is missing is an error naming both ways out."""
    if sampler_model:
        return reasoner_model if sampler_model == SAMPLER_MODEL_SELF else sampler_model
    recorded = read_model_settings(reasoner_model).get("base_model")
    if not recorded:
        return reasoner_model
    base = resolve_model_ref(recorded, reasoner_model)
    if recorded.startswith((".", "/", "~")) and not Path(base).exists():
        raise ModelSettingsError(
            f"reasoner {reasoner_model} was trained from {base}, its frozen stage-1 (HTFS) model, which is not "
            f"there; copy that folder there, pass --sampler-model PATH, or --sampler-model reasoner to let the "
            f"trained reasoner answer the HTFS prompts too")
    return base


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same weights (same resolved folder, or the same id)."""
    pa, pb = Path(str(a)).expanduser(), Path(str(b)).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a) == str(b)


def apply_model_settings(cfg, explicit: Iterable[str] = ()):
    """``cfg`` (a ``PipelineConfig``) with the settings of its reasoner's folder and of the stage-1
    model's folder filled in, and ``sampler.model`` resolved (:func:`stage_one_model`). Fields
    named in ``explicit`` (``"reasoner.model_input_size"``, ...: a config file's or a flag's) are
    kept as they are."""
    explicit = set(explicit)
    own = read_model_settings(cfg.reasoner.model)
    stage_one = stage_one_model(cfg.reasoner.model, cfg.sampler.model)
    first = own if same_model(stage_one, cfg.reasoner.model) else read_model_settings(stage_one)

    def pick(section: str, source: dict, keys: tuple[str, ...]) -> dict[str, Any]:
        values = source.get(section, {})
        return {k: values[k] for k in keys if k in values and f"{section}.{k}" not in explicit}

    r = dataclasses.replace(cfg.reasoner, **pick("reasoner", own, REASONER_KEYS))
    s = dataclasses.replace(cfg.sampler, **pick("sampler", own, LAYOUT_KEYS), **pick("sampler", first, HTFS_KEYS),
                            model=stage_one)
    return dataclasses.replace(cfg, reasoner=r, sampler=s)
