"""Options shared by the commands that run the pipeline (``segment``, ``predict``, ``demo``):
model ids/checkpoints, devices, dtypes, sizes, and how they fill a ``PipelineConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from videoseg_r1.config import PipelineConfig, load_config
from videoseg_r1.model_settings import apply_model_settings
from videoseg_r1.presets import MODELS_ENV, PRESETS


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models and devices")
    g.add_argument("--config", help="YAML file filling PipelineConfig (flags below override it)")
    g.add_argument("--preset", choices=sorted(PRESETS),
                   help="named set of models + settings, e.g. synthetic-small (models/<preset>/ in the checkout "
                   f"or under ${MODELS_ENV}); flags below override it")
    g.add_argument("--reasoner", help="reasoning model: hub id or local folder (default Qwen/Qwen2.5-VL-7B-Instruct)")
    g.add_argument("--sampler-model", help="frozen stage-1 (HTFS) model: hub id or folder; 'reasoner' = the "
                   "reasoner itself (default: the base the reasoner was trained from, as its folder records)")
    g.add_argument("--sam2", help="SAM2 model: hub id or folder (default facebook/sam2.1-hiera-large)")
    g.add_argument("--xmem", help="XMem checkpoint: path or URL of XMem.pth (default: the official release)")
    g.add_argument("--propagator", choices=["xmem", "sam2_video"], help="mask propagation backend (default xmem)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="model dtype (default auto)")
    g.add_argument("--short-side", type=int, help="propagation resolution: shorter side in pixels (default 480)")
    g.add_argument("--model-input-size", type=int, help="target-frame size shown to the reasoner (default 840)")
    g.add_argument("--max-new-tokens", type=int, help="reasoning token limit")
    g.add_argument("--seed", type=int, help="seed of every sampling step (default 0): the same command gives "
                   "the same masks; demo: also of the generated video and query")
    g.add_argument("--target-frame", help="ablation: 'first', 'middle' or an index instead of HTFS")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    preset = getattr(args, "preset", None)
    if preset and getattr(args, "config", None):
        raise ValueError("give either --preset or --config, not both (flags still override either one)")
    if preset:
        from videoseg_r1.presets import preset_config

        # models named by flag are not looked up (they need not exist in the preset folder)
        given = tuple(c for c in ("reasoner", "sam2", "xmem") if getattr(args, c, None))
        cfg = preset_config(preset, skip=given)
    else:
        cfg = load_config(args.config) if getattr(args, "config", None) else PipelineConfig()
    explicit = _config_file_keys(getattr(args, "config", None))
    r, s, pr = cfg.reasoner, cfg.segmenter, cfg.propagator
    if args.reasoner:
        r = dataclasses.replace(r, model=args.reasoner)
    if args.sam2:
        s = dataclasses.replace(s, model=args.sam2)
        pr = dataclasses.replace(pr, sam2_video_model=args.sam2)
    if args.xmem:
        pr = dataclasses.replace(pr, checkpoint=args.xmem)
    if args.propagator:
        pr = dataclasses.replace(pr, backend=args.propagator)
    if args.short_side:
        pr = dataclasses.replace(pr, short_side=args.short_side)
    if args.model_input_size:
        r = dataclasses.replace(r, model_input_size=args.model_input_size)
    if args.max_new_tokens:
        r = dataclasses.replace(r, max_new_tokens=args.max_new_tokens)
    for name in ("device", "dtype"):
        value = getattr(args, name, None)
        if value:
            r, s, pr = (dataclasses.replace(x, **{name: value}) for x in (r, s, pr))
    if args.model_input_size:
        explicit.add("reasoner.model_input_size")
    sampler = cfg.sampler
    if getattr(args, "sampler_model", None):
        sampler = dataclasses.replace(sampler, model=args.sampler_model)
    cfg = dataclasses.replace(cfg, reasoner=r, sampler=sampler, segmenter=s, propagator=pr)
    if getattr(args, "seed", None) is not None:
        cfg = dataclasses.replace(cfg, seed=int(args.seed))
    # the layout the reasoner was trained with, from its folder (model_settings): above the
    # defaults and the preset, below the config file and the flags
    return apply_model_settings(cfg, explicit)


def _config_file_keys(path) -> set[str]:
    """Dotted names of the fields a YAML config file sets (``reasoner.model_input_size``, ...)."""
    if not path:
        return set()
    from videoseg_r1.config import yaml_load

    data = yaml_load(Path(path).read_text()) or {}
    return {f"{section}.{key}" for section, values in data.items() if isinstance(values, dict) for key in values}


def frame_selector_from_args(args: argparse.Namespace):
    """None (HTFS) or a FixedFrameSelector for the --target-frame ablation."""
    value = getattr(args, "target_frame", None)
    if not value:
        return None
    from videoseg_r1.pipeline import FixedFrameSelector

    if value in ("first", "middle"):
        return FixedFrameSelector(value)
    try:
        return FixedFrameSelector(int(value))
    except ValueError:
        raise ValueError(f"--target-frame must be 'first', 'middle' or a frame index, got {value!r}") from None


def prepare_output_dir(out: Path, overwrite: bool, marker: str) -> None:
    """Refuse to mix runs: an existing non-empty folder needs --overwrite (and must look like ours,
    i.e. contain ``marker``, before we delete it)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"output {out} exists and is not empty; choose another --out or pass --overwrite")
        if out.is_dir() and not (out / marker).exists():
            raise FileExistsError(f"output {out} does not look like a videoseg-r1 output (no {marker}); "
                                  "refusing to delete it")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
