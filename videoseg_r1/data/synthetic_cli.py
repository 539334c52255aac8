"""``videoseg-r1 synth``: write the synthetic reasoning-VOS benchmark (ReVOS layout) and overlay videos.

Wired into ``videoseg_r1.cli`` (``add_arguments`` / ``run``); the work is done by
``videoseg_r1.data.synthetic.generate``. Example (the README's main command until the pipeline lands)::

    videoseg-r1 synth --out data/synthetic --videos 100 --overlay 1
"""

from __future__ import annotations

import argparse
import json
import re
import time

from videoseg_r1.data import synthetic as S


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/synthetic",
                        help="output directory (ReVOS layout); default: %(default)s")
    parser.add_argument("--videos", type=int, default=S.DEFAULT_NUM_VIDEOS,
                        help="total number of videos, shared among the splits "
                             "(70%% train, 15%% valid, 15%% test_ood); default: %(default)s")
    parser.add_argument("--frames", type=int, default=S.DEFAULT_NUM_FRAMES,
                        help="frames per video; default: %(default)s")
    parser.add_argument("--size", default="%dx%d" % S.DEFAULT_SIZE_WH,
                        help="frame size WIDTHxHEIGHT in pixels; default: %(default)s")
    parser.add_argument("--seed", type=int, default=0,
                        help="dataset seed; each video is seeded from (seed, split, index); default: %(default)s")
    parser.add_argument("--splits", default=",".join(S.SPLITS),
                        help="comma-separated splits among train, valid, test_ood; default: %(default)s")
    parser.add_argument("--overlay", type=int, default=0, metavar="N",
                        help="also render N overlay videos (ground-truth masks + query caption, H.264) "
                             "into OUT/overlays/; default: %(default)s")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: 2 for 8 videos or more, else 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT even if it is a non-empty folder that synth did not write")


def parse_size(text: str) -> tuple[int, int]:
    """'320x240' -> (320, 240); one-line ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"--size must look like 320x240 (WIDTHxHEIGHT), got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if not (S.MIN_SIDE_PX <= w <= S.MAX_SIDE_PX and S.MIN_SIDE_PX <= h <= S.MAX_SIDE_PX):
        raise ValueError(f"--size {text}: each side must be in {S.MIN_SIDE_PX}..{S.MAX_SIDE_PX} pixels")
    return w, h


def run(args: argparse.Namespace) -> int:
    if args.videos < 1:
        raise ValueError(f"--videos must be at least 1, got {args.videos}")
    if args.frames < S.MIN_FRAMES:
        raise ValueError(f"--frames must be at least {S.MIN_FRAMES}, got {args.frames}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.overlay < 0:
        raise ValueError(f"--overlay must be >= 0, got {args.overlay}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    size = parse_size(args.size)
    splits = tuple(s.strip() for s in str(args.splits).split(",") if s.strip())
    unknown = [s for s in splits if s not in S.SPLITS]
    if unknown or not splits:
        raise ValueError(f"--splits {args.splits!r}: choose a comma-separated subset of {', '.join(S.SPLITS)}")
    t0 = time.perf_counter()
    out = S.generate(args.out, num_videos=args.videos, frames=args.frames, size=size, seed=args.seed,
                     splits=splits, overlay=args.overlay, overwrite=args.overwrite, workers=args.workers,
                     progress=True)
    elapsed = time.perf_counter() - t0
    counts = S.split_counts(args.videos, splits)
    num_exp = 0
    for s in splits:
        with open(out / f"meta_expressions_{s}_.json") as fh:
            num_exp += sum(len(v["expressions"]) for v in json.load(fh)["videos"].values())
    per_split = ", ".join(f"{counts[s]} {s}" for s in splits)
    print(f"wrote {args.videos} videos ({per_split}), {num_exp} expressions, {args.frames} frames of "
          f"{size[0]}x{size[1]} in {elapsed:.1f} s to {out.resolve()}")
    print(f"  frames:      {out / 'JPEGImages'}/<video>/<00000>.jpg")
    print(f"  masks:       {out / 'mask_dict.json'}, {out / 'mask_dict_foreground.json'}")
    print("  expressions: " + ", ".join(str(out / f"meta_expressions_{s}_.json") for s in splits))
    print(f"  extra ground truth (tier, difficulty, key interval, target frame): {out / 'synthetic_meta.json'}")
    overlays = sorted((out / "overlays").glob("*.mp4")) if args.overlay else []
    for p in overlays:
        print(f"  overlay:     {p}")
    return 0
