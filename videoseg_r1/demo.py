"""``videoseg-r1 demo``: the whole pipeline on one video, offline, with the shipped small models.

Without ``--video`` it generates one synthetic video (``valid`` or ``test_ood`` split, seeded) with a
reasoning query whose targets are known, runs HTFS -> reasoning -> SAM2 -> XMem, writes
``overlay.mp4``, ``trace.json`` and ``masks/`` (through ``segment_cli.write_outputs``) and prints the
key frame, the reasoning text and J, F, J&F against the ground truth (the union of the targets,
scored with ``eval.metrics``). With ``--video V --query Q`` it does the same on your video, without
scores. Models come from ``--preset`` (default ``synthetic-small``) or explicit model flags.

    videoseg-r1 demo                                   # synthetic video, preset synthetic-small
    videoseg-r1 demo --split test_ood --seed 3 --out demo_out --device cpu
    videoseg-r1 demo --video clip.mp4 --query "the shape that stops first"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from videoseg_r1.cli_common import add_model_arguments, config_from_args, frame_selector_from_args, prepare_output_dir

DEMO_FRAMES = 32  # frames of the generated video: the length the small models were trained on; ours
DEMO_SIZE_WH = (320, 240)  # the synthetic benchmark's default size
DEMO_MIN_TIER = 2  # prefer reasoning queries (tiers 2-4: superlatives, motion, chains) over attributes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", help="your video (file or frame folder) instead of a generated one; needs --query")
    p.add_argument("--query", "-q", help="text query (with --video; or to replace the generated video's query, "
                   "in which case no scores are printed)")
    p.add_argument("--split", choices=["valid", "test_ood"], default="valid",
                   help="distribution of the generated video: in-distribution or held-out (default valid)")
    p.add_argument("--frames", type=int, default=DEMO_FRAMES, help=f"frames of the generated video (default {DEMO_FRAMES})")
    p.add_argument("--out", "-o", default="videoseg_r1_demo",
                   help="output folder (default ./videoseg_r1_demo; an earlier demo output there is replaced)")
    p.add_argument("--fps", type=float, help="frame rate of a frame folder given with --video (default 30)")
    add_model_arguments(p)


def _model_args_given(args: argparse.Namespace) -> bool:
    return bool(args.reasoner and args.sam2 and args.xmem)


def synthetic_example(seed: int, split: str, frames: int = DEMO_FRAMES):
    """(SyntheticVideo, SyntheticExpression): one generated video and one of its queries, chosen
    (seeded) among the reasoning tiers when there are any."""
    import numpy as np

    from videoseg_r1.data.synthetic import generate_video

    sv = generate_video(seed, split=split, index=0, frames=frames, size=DEMO_SIZE_WH)
    pool = [e for e in sv.expressions if e.tier >= DEMO_MIN_TIER] or list(sv.expressions)
    expr = pool[int(np.random.default_rng(seed).integers(len(pool)))]
    return sv, expr


def score(pred_thw, gt_thw) -> dict[str, float]:
    """J, F, J&F of (T, H, W) boolean masks, averaged over all frames (the benchmarks' protocol)."""
    from videoseg_r1.eval.metrics import contour_accuracy, region_similarity

    j = float(region_similarity(pred_thw, gt_thw).mean())
    f = float(contour_accuracy(pred_thw, gt_thw).mean())
    return {"J": j, "F": f, "J&F": (j + f) / 2}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    seed = args.seed if args.seed is not None else 0  # the video's, the query's and the sampling's

    from videoseg_r1.pipeline import load_pipeline
    from videoseg_r1.video import ArrayVideo, open_video

    t0 = time.perf_counter()
    if args.video and not (args.query and args.query.strip()):
        raise ValueError("--video needs --query: the text describing the object(s) to segment")
    if args.frames < 2:
        raise ValueError(f"--frames must be at least 2, got {args.frames}")
    if not args.preset and not args.config and not _model_args_given(args):
        from videoseg_r1.presets import DEFAULT_PRESET

        args.preset = DEFAULT_PRESET
    out = Path(args.out)
    prepare_output_dir(out, overwrite=True, marker="trace.json")  # refuse a foreign folder before any work
    config = config_from_args(args)  # a missing preset fails here, before anything is generated or loaded

    gt = None
    if args.video:
        video, query = open_video(args.video, fps=args.fps), args.query.strip()
        print(f"video: {args.video} ({len(video)} frames, {video.width}x{video.height})")
    else:
        sv, expr = synthetic_example(seed, args.split, args.frames)
        video = ArrayVideo(list(sv.frames), fps=sv.fps, name=f"synthetic:{sv.name}:seed{seed}")
        if args.query and args.query.strip():
            query = args.query.strip()
        else:
            query = expr.text
            gt = np.isin(sv.label_maps, list(expr.obj_ids))
        print(f"video: synthetic {args.split} video (seed {seed}, {sv.num_frames} frames, "
              f"{sv.width}x{sv.height}, {len(sv.objects)} shapes)")
        if gt is not None:
            print(f"ground truth: object(s) {list(expr.obj_ids)}, tier {expr.tier}, difficulty {expr.difficulty:.1f}, "
                  f"key interval {tuple(expr.key_interval)}, annotated target frame {expr.target_frame}")
    print(f"query: {query}")

    t_load = time.perf_counter()
    selector = frame_selector_from_args(args)
    pipe = load_pipeline(config, **({"frame_selector": selector} if selector else {}))
    load_s = time.perf_counter() - t_load
    result = pipe(video, query, progress=sys.stderr.isatty())

    from videoseg_r1.segment_cli import summary, write_outputs

    write_outputs(result, video, out, fmt="png", overlay=True)
    print(summary(result))
    think = result.reasoning.think if result.reasoning is not None else None
    print(f"key frame: {result.target_frame_idx} (key segment {tuple(result.sampled.key_segment)})")
    print("reasoning: " + (think.strip() if think and think.strip() else "(none)"))
    if result.reasoning is not None:
        print(f"model output: {result.reasoning.text.strip()}")
    scores = None
    if gt is not None:
        pred = result.tracks.union().astype(bool)
        scores = score(pred, gt)
        print(f"J {scores['J']:.3f}  F {scores['F']:.3f}  J&F {scores['J&F']:.3f}  "
              f"(vs the union of the {len(expr.obj_ids)} target(s), over {gt.shape[0]} frames)")
        from videoseg_r1.results import atomic_write_json

        atomic_write_json(out / "scores.json", {"query": query, "split": args.split, "seed": seed,
                                                "target_obj_ids": list(expr.obj_ids), **scores})
    print(f"wrote {out}/ (masks/, overlay.mp4, trace.json{', scores.json' if scores else ''})")
    print(f"total wall time {time.perf_counter() - t0:.1f}s (model loading {load_s:.1f}s)")
    return 0
