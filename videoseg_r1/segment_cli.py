"""``videoseg-r1 segment VIDEO --query TEXT --out DIR``: segment what a query refers to in one video.

Writes ``masks/`` (one palette PNG per frame, pixel value = object id; or ``masks.json`` with
``--format rle``), ``overlay.mp4`` (coloured masks, the key frame marked with its prompts, the
query and the reasoning), ``trace.json``, and prints a short summary. Everything is written into a
temporary sibling folder renamed into place at the end, so an interrupted run leaves nothing that
looks complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from videoseg_r1.cli_common import (add_model_arguments, config_from_args, frame_selector_from_args,
                                    prepare_output_dir)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (mp4, mov, avi, webm) or folder of jpg/png frames")
    p.add_argument("--query", "-q", required=True, help="text describing the object(s) to segment")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--format", choices=["png", "rle"], default="png",
                   help="masks as palette PNGs per frame (default) or one COCO-RLE JSON file")
    p.add_argument("--fps", type=float, help="frame rate of a frame folder (default 30)")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder of ours")
    add_model_arguments(p)


def write_outputs(result, video, out: Path, fmt: str = "png", overlay: bool = True) -> None:
    """Write masks, overlay and trace of a pipeline ``Result`` into ``out`` atomically."""
    from videoseg_r1.results import atomic_write_json
    from videoseg_r1.video import write_overlay_video

    names = getattr(video, "frame_names", None) or [f"{t:05d}" for t in range(len(video))]
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if fmt == "rle":
            result.tracks.write_rle_json(tmp / "masks.json", names)
        else:
            result.tracks.write_palette_pngs(tmp / "masks", names)
        if overlay:
            key = result.target_frame_idx
            boxes = {p.obj_idx + 1: p.box_xyxy for p in result.prompts if p.box_xyxy is not None}
            points = {p.obj_idx + 1: [(x, y, lab) for (x, y), lab in zip(p.points_xy, p.labels)] for p in result.prompts}
            think = result.reasoning.think if result.reasoning is not None and result.reasoning.think else ""
            text = f'"{result.trace.query}"' + (f" -- {think}" if think else "")
            frames = video.iter_frames() if getattr(video, "short_side", None) is None else _unresized(video).iter_frames()
            write_overlay_video(tmp / "overlay.mp4", frames, iter(result.tracks), fps=video.fps, key_frame_idx=key,
                                boxes_xyxy=boxes, points_xy=points, text=text,
                                hold_key_frame=max(1, int(round(video.fps))))
        atomic_write_json(tmp / "trace.json", result.trace.to_dict())
        prepare_output_dir(out, overwrite=True, marker="trace.json")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _unresized(video):
    import copy

    v = copy.copy(video)
    v.short_side = None
    return v


def summary(result) -> str:
    t = result.trace
    lines = [f"video: {t.video} ({t.num_frames} frames at {t.fps:g} fps)", f"query: {t.query}",
             f"key segment: {tuple(result.sampled.key_segment)}, target frame: {result.target_frame_idx}",
             f"targets found: {result.num_objects}"]
    if t.fallbacks:
        lines.append("fallbacks: " + "; ".join(t.fallbacks))
    lines.append("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.stage_seconds.items())
                 + f" (total {sum(t.stage_seconds.values()):.2f}s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from videoseg_r1.pipeline import load_pipeline
    from videoseg_r1.video import open_video

    out = Path(args.out)
    prepare_output_dir(out, args.overwrite, marker="trace.json")  # fail before loading any model
    video = open_video(args.video, fps=args.fps)
    if not args.query.strip():
        raise ValueError("the query is empty; give a text describing the object(s) to segment")
    config = config_from_args(args)
    selector = frame_selector_from_args(args)
    pipe = load_pipeline(config, **({"frame_selector": selector} if selector else {}))
    result = pipe(video, args.query, progress=sys.stderr.isatty())
    write_outputs(result, video, out, fmt=args.format, overlay=not args.no_overlay)
    print(summary(result))
    print(f"wrote {out}/ ({'masks.json' if args.format == 'rle' else 'masks/'}"
          f"{'' if args.no_overlay else ', overlay.mp4'}, trace.json)")
    return 0 if result.num_objects else 1
